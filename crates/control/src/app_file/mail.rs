//! `[mail]` of `turnout.toml`: the name of the variable that carries the mail catcher's URL
//! to environments below production (`SMTP_URL` unless set), layered per tier and environment
//! like the others.
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{AppFileError, FILE_NAME, line_at};

/// `[mail]` as written; `parse` checks it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSection {
    pub url_var: Option<Spanned<String>>,
}

/// The mail settings of one environment, resolved like the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailConfig {
    /// The variable instances find the catcher's URL in.
    pub url_var: String,
}

pub const DEFAULT_URL_VAR: &str = "SMTP_URL";

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            url_var: DEFAULT_URL_VAR.to_owned(),
        }
    }
}

pub(super) fn mail_config(section: MailSection) -> MailConfig {
    MailConfig {
        url_var: section
            .url_var
            .map(Spanned::into_inner)
            .unwrap_or_else(|| DEFAULT_URL_VAR.to_owned()),
    }
}

pub(super) fn merge_mail(into: &mut MailSection, over: &MailSection) {
    if over.url_var.is_some() {
        into.url_var = over.url_var.clone();
    }
}

/// `url_var` must be a variable name an environment may be given.
pub(super) fn check_mail(
    text: &str,
    prefix: &str,
    section: &MailSection,
) -> Result<(), AppFileError> {
    if let Some(var) = &section.url_var
        && let Err(e) = super::check_env_key(var.get_ref())
    {
        return Err(AppFileError::Invalid {
            file: FILE_NAME,
            line: line_at(text, var.span().start),
            message: format!("{prefix}.url_var: {e}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use turnout_model::{EnvName, Tier};

    use super::super::{AppFileError, resolve};

    #[test]
    fn url_var_is_layered_and_checked() {
        let text = "[run]\ncommand = \"x\"\n[tiers.qa.mail]\nurl_var = \"MAILER_URL\"\n\
                    [environments.special.mail]\nurl_var = \"SPECIAL_SMTP\"\n";
        let env = |n: &str| EnvName::new(n).unwrap();
        let url_var = |tier, name: &str| {
            resolve(Some(text), None, tier, &env(name))
                .unwrap()
                .mail
                .url_var
        };
        assert_eq!(url_var(Tier::Staging, "staging"), "SMTP_URL");
        assert_eq!(url_var(Tier::Qa, "qa"), "MAILER_URL");
        assert_eq!(url_var(Tier::Qa, "special"), "SPECIAL_SMTP");
        let bad = "[run]\ncommand = \"x\"\n\n[tiers.test.mail]\nurl_var = \"PORT\"\n";
        let e = resolve(Some(bad), None, Tier::Test, &env("t")).unwrap_err();
        let AppFileError::Invalid { line, message, .. } = e else {
            panic!("{e:?}");
        };
        assert_eq!(line, 5);
        assert!(message.contains("tiers.test.mail.url_var"), "{message}");
        assert!(
            resolve(
                Some("[run]\ncommand = \"x\"\n[mail]\nhost = \"x\"\n"),
                None,
                Tier::Test,
                &env("t")
            )
            .is_err()
        );
    }
}
