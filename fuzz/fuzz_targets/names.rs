//! Validation of what users type: app and environment names, `APP/ENV`, domains, durations and
//! plan values. Whatever is accepted keeps the promise its type makes; nothing panics.
#![no_main]

use std::str::FromStr;
use std::time::Duration;

use turnout_model::duration::DurationRule;
use turnout_model::{AppName, DomainName, EnvName, EnvRef, plan};

const DURATION: DurationRule =
    DurationRule::new("fuzz", Duration::from_millis(10), Duration::from_secs(3600));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in [
        AppName::new(text).map(|n| n.to_string()),
        EnvName::new(text).map(|n| n.to_string()),
    ]
    .into_iter()
    .flatten()
    {
        // A DNS label: it becomes part of host names and paths.
        assert_eq!(name, text);
        assert!((1..=40).contains(&name.len()));
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        assert!(!name.starts_with('-') && !name.ends_with('-'));
    }
    if let Ok(r) = EnvRef::from_str(text) {
        assert_eq!(r.to_string(), text);
        assert_eq!(EnvRef::from_str(&r.to_string()).unwrap(), r);
    }
    if let Ok(d) = DomainName::new(text) {
        // Normalised once: parsing its own text gives it back.
        assert_eq!(DomainName::new(d.as_str()).unwrap(), d);
        assert!(d.as_str().len() <= 253);
        assert!(!d.as_str().ends_with('.'));
        assert!(d.as_str().parse::<std::net::IpAddr>().is_err());
        assert!(d.as_str().bytes().all(|b| b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'-' | b'.' | b'*')));
    }
    if let Ok(d) = DURATION.parse(text) {
        assert!((DURATION.min..=DURATION.max).contains(&d));
    }
    if let Ok(m) = plan::parse_memory(text) {
        assert!((plan::MEMORY_MIN..=plan::MEMORY_MAX).contains(&m));
    }
    if let Ok(c) = plan::parse_cpu(text) {
        assert!((plan::CPU_MIN..=plan::CPU_MAX).contains(&c));
    }
    if let Ok(p) = plan::parse_pids(text) {
        assert!((plan::PIDS_MIN..=plan::PIDS_MAX).contains(&p));
    }
});
