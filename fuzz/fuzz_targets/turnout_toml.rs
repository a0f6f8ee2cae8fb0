//! `turnout.toml` (and a Procfile) resolved for one environment: any text either resolves to
//! settings inside every key's bounds or is a one-line error naming the file and line.
#![no_main]

use std::time::Duration;

use turnout_control::app_file::{self, durations};
use turnout_model::duration::DurationRule;
use turnout_model::{EnvName, Tier};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let tier = Tier::ALL[usize::from(pick) % Tier::ALL.len()];
    let env = EnvName::new(["dev", "canary", "prod"][usize::from(pick / 64) % 3]).unwrap();
    let procfile = (pick & 1 == 1).then_some(text);
    match app_file::resolve(Some(text), procfile, tier, &env) {
        Ok(config) => {
            assert!(config.health_path.starts_with('/'));
            assert!(
                !config
                    .health_path
                    .chars()
                    .any(|c| c.is_control() || c == ' ')
            );
            assert!(!config.run.trim().is_empty());
            let within = |d: Duration, rule: DurationRule| {
                assert!((rule.min..=rule.max).contains(&d), "{}: {d:?}", rule.key)
            };
            within(config.build_timeout, durations::BUILD_TIMEOUT);
            within(config.stop_timeout, durations::STOP_TIMEOUT);
            within(config.drain_timeout, durations::DRAIN_TIMEOUT);
            within(config.stream_drain_timeout, durations::STREAM_DRAIN_TIMEOUT);
            within(config.health_timeout, durations::HEALTH_TIMEOUT);
            within(config.health_interval, durations::HEALTH_INTERVAL);
            for key in config.env.keys() {
                assert!(app_file::check_env_key(key).is_ok(), "{key:?}");
            }
            // A seed file never names a path outside the release directory.
            if let Some(app_file::Seed::SqlFile(path)) = &config.data.seed {
                assert!(
                    path.is_relative()
                        && path
                            .components()
                            .all(|c| !matches!(c, std::path::Component::ParentDir)),
                    "{path:?}"
                );
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
        }
    }
});
