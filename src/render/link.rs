//! Links as the terminal shows them: `turnout link …`.
use super::*;
use turnout_model::LinkInfo;

/// Every link of an app, with each environment's counterpart or why it has none.
pub fn links(links: &[LinkInfo], json: bool) {
    if json {
        return print_json(&links);
    }
    if links.is_empty() {
        outln!("no links; add one with `turnout link APP OTHER`");
        return;
    }
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        link_table(link);
    }
}

pub fn created(link: &LinkInfo, json: bool) {
    if json {
        return print_json(link);
    }
    link_table(link);
    outln!(
        "takes effect: each environment of {} gets {} at its next deploy or `turnout restart`",
        link.app,
        link.var
    );
}

pub fn removed(link: &LinkInfo, json: bool) {
    if json {
        return print_json(link);
    }
    outln!(
        "removed the link {} → {} ({}); running instances keep {} until their next deploy or restart, but it no longer leads anywhere",
        link.app,
        link.other,
        link.var,
        link.var
    );
}

fn link_table(link: &LinkInfo) {
    let default = link
        .default
        .as_ref()
        .map(|d| format!(", default {d}"))
        .unwrap_or_default();
    outln!("{} → {} as {}{default}", link.app, link.other, link.var);
    let mut t = table(&["ENV", "REACHES", "BY", "URL"]);
    for target in &link.envs {
        let (to, by, url) = match (&target.to, &target.missing) {
            (Some(to), _) => (
                format!("{}/{to}", link.other),
                target.rule.map_or("", |r| r.as_str()).to_owned(),
                target.url.clone().unwrap_or_else(|| "-".to_owned()),
            ),
            (None, why) => (
                "MISSING".to_owned(),
                why.clone().unwrap_or_default(),
                "- (not set)".to_owned(),
            ),
        };
        t.add_row(vec![target.env.to_string(), to, by, url]);
    }
    outln!("{t}");
}
