//! A local CA for internal URLs over HTTPS: with `--https-listen`, `https://ENV.APP.localhost`
//! is served with a certificate for `*.APP.localhost` that this CA signs. Whoever wants the
//! browser's padlock on internal URLs trusts `<home>/local-ca/ca.pem` once.
//!
//! The CA is made once per home (its key mode 0600, never leaves the home) and is name
//! constrained to `localhost`: trusting it lets it vouch for `*.localhost` names only, so even
//! its key, were it stolen, could not impersonate any real domain. Its leaves live 90 days, are
//! made in memory (at start, for a new app) and are made again once a third of their life is
//! left.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};

/// How long a leaf lives, and how long before its end it is made again.
const LEAF_DAYS: i64 = 90;
const LEAF_RENEW_DAYS: i64 = 30;

/// The home's local CA and the leaves it made.
pub struct LocalCa {
    cert_file: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// `*.APP.localhost` by app: chain (leaf, CA), key, and when it is made again.
    leaves: Mutex<HashMap<String, Leaf>>,
}

#[derive(Clone)]
struct Leaf {
    chain_pem: String,
    key_pem: String,
    renew_at: i64,
}

impl LocalCa {
    /// The CA of the home, made on first use: `<home>/local-ca/ca.pem` and `ca.key` (0600).
    pub fn open(home: &Path) -> Result<LocalCa, String> {
        let dir = home.join("local-ca");
        let shown = dir.display();
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {shown}: {e}"))?;
        super::set_mode(&dir, 0o700).map_err(|e| format!("{shown}: {e}"))?;
        let (key_file, cert_file) = (dir.join("ca.key"), dir.join("ca.pem"));
        let key = match std::fs::read_to_string(&key_file) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| {
                format!(
                    "{} is not the local CA's key ({e}); remove {shown} to make a new CA",
                    key_file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(|e| e.to_string())?;
                super::write_atomic(&key_file, key.serialize_pem().as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", key_file.display()))?;
                // A certificate of another key would not match: made again below.
                let _ = std::fs::remove_file(&cert_file);
                key
            }
            Err(e) => return Err(format!("cannot read {}: {e}", key_file.display())),
        };
        // The same parameters every time, from the key: the certificate kept in the file and
        // the issuer of every leaf agree on the name and the key identifier.
        let params = ca_params(&key)?;
        let cert_pem = match std::fs::read_to_string(&cert_file) {
            Ok(pem) => pem,
            Err(_) => {
                let pem = params.self_signed(&key).map_err(|e| e.to_string())?.pem();
                super::write_atomic(&cert_file, pem.as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", cert_file.display()))?;
                pem
            }
        };
        Ok(LocalCa {
            cert_file,
            cert_pem,
            issuer: Issuer::new(params, key),
            leaves: Mutex::default(),
        })
    }

    /// The CA's certificate, to trust in a browser.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The chain and key `*.APP.localhost` is served with at `now` (seconds since the epoch):
    /// the one made before, or a new one once a third of its life is left.
    pub fn app_cert(&self, app: &str, now: i64) -> Result<(String, String), String> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leaf) = leaves.get(app).filter(|l| now < l.renew_at) {
            return Ok((leaf.chain_pem.clone(), leaf.key_pem.clone()));
        }
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(vec![format!("*.{app}.localhost")])
            .map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("*.{app}.localhost"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, now - 86_400, now + LEAF_DAYS * 86_400)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        let leaf = Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            renew_at: now + (LEAF_DAYS - LEAF_RENEW_DAYS) * 86_400,
        };
        leaves.insert(app.to_owned(), leaf.clone());
        Ok((leaf.chain_pem, leaf.key_pem))
    }
}

/// The CA's parameters: a name that says whose it is and tells two homes' CAs apart (from the
/// key's fingerprint), CA use only, and names under `localhost` only.
fn ca_params(key: &KeyPair) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let fingerprint = blake3::hash(&rcgen::PublicKeyData::subject_public_key_info(key)).to_hex();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Turnout local CA {}", &fingerprint[..12]),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Turnout (internal URLs)");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName("localhost".to_owned())],
        excluded_subtrees: Vec::new(),
    });
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    Ok(params)
}

/// Valid from midnight UTC of the day `from` falls in to that of `to` (seconds since the epoch).
fn set_validity(params: &mut CertificateParams, from: i64, to: i64) -> Result<(), String> {
    let midnight = |at: i64| {
        let date = jiff::Timestamp::from_second(at)
            .map_err(|e| e.to_string())?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let (month, day) = (u8::try_from(date.month()), u8::try_from(date.day()));
        match (month, day) {
            (Ok(month), Ok(day)) => Ok(rcgen::date_time_ymd(date.year().into(), month, day)),
            _ => Err(format!("no date for {at}")),
        }
    };
    params.not_before = midnight(from)?;
    params.not_after = midnight(to)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_kept_and_a_leaf_is_made_again_when_a_third_of_its_life_is_left() {
        let home = tempfile::tempdir().unwrap();
        let ca = LocalCa::open(home.path()).unwrap();
        let now = 1_800_000_000;
        let first = ca.app_cert("shop", now).unwrap();
        assert!(
            first.0.ends_with(&ca.cert_pem),
            "the chain ends with the CA"
        );
        assert_eq!(ca.app_cert("shop", now + 59 * 86_400).unwrap(), first);
        let renewed = ca.app_cert("shop", now + 61 * 86_400).unwrap();
        assert_ne!(renewed, first);
        assert_ne!(ca.app_cert("blog", now).unwrap().0, first.0);
        // Opened again (a restart): the same CA, so browsers that trust it keep trusting.
        let again = LocalCa::open(home.path()).unwrap();
        assert_eq!(again.cert_pem, ca.cert_pem);
        let (chain, key) = again.app_cert("shop", now).unwrap();
        assert!(turnout_proxy::certified_key(&chain, &key).is_ok());
    }
}
