//! Configuration as the terminal shows it: `turnout config list|get|set|unset`.
use super::*;
use turnout_model::{ConfigChanged, ConfigEntry, ConfigListing, Tier};

pub fn changed(verb: &str, target: &str, tier: Option<Tier>, c: &ConfigChanged, json: bool) {
    if json {
        return print_json(c);
    }
    let at = tier.map(|t| format!(" --tier {t}")).unwrap_or_default();
    outln!(
        "{verb} {} at {target}{at} (configuration version {}); instances get it at the next deploy or `turnout restart`",
        c.keys.join(", "),
        c.version
    );
}

pub fn get(e: &ConfigEntry, json: bool) {
    if json {
        return print_json(e);
    }
    outln!("{}", e.value);
}

fn overrides(e: &ConfigEntry) -> String {
    e.overrides
        .iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn list(l: &ConfigListing, json: bool) {
    if json {
        return print_json(l);
    }
    let at = match (&l.env, l.tier) {
        (Some(env), _) => format!("{}/{env}", l.app),
        (None, Some(t)) => format!("{} --tier {t}", l.app),
        (None, None) => format!("{} (app level)", l.app),
    };
    outln!("{at}: configuration version {}", l.version);
    if l.env.is_some() {
        outln!(
            "  levels, later wins: file, file-tier, file-env (turnout.toml), app, tier, env (turnout config), turnout"
        );
    }
    if l.entries.is_empty() {
        outln!("nothing set: `turnout config set {at} KEY=VALUE`");
        return;
    }
    let mut t = table(&["KEY", "LEVEL", "VALUE", "OVERRIDES", "UPDATED", "BY"]);
    for e in &l.entries {
        t.add_row(vec![
            e.key.clone(),
            e.level.to_string(),
            e.value.clone(),
            overrides(e),
            e.updated_at.clone().unwrap_or_default(),
            e.updated_by.clone().unwrap_or_default(),
        ]);
    }
    outln!("{t}");
}
