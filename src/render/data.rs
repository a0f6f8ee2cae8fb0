//! Environments' data as the terminal shows it: `turnout data show`, attach and detach, and the
//! connection `data psql|sqlite --json` prints.
use super::*;
use turnout_model::{DataConnection, DataInfo, EnvRef};

pub fn info(d: &DataInfo, json: bool) {
    if json {
        return print_json(d);
    }
    outln!(
        "{}/{}: {}, generation {}",
        d.app,
        d.env,
        d.engine,
        d.generation
    );
    outln!("  url:      {}", d.url);
    outln!("  storage:  {}", d.storage_dir);
    if let Some(size) = d.size_bytes {
        outln!("  size:     {}", format_bytes(size));
    }
    let origin = match (d.origin.kind.as_str(), &d.origin.from) {
        ("clone", Some(from)) => format!("a clone of {from}"),
        ("sync", Some(from)) => format!("a masked sync of {from}"),
        ("seed", _) => "the seed".to_owned(),
        _ => "empty".to_owned(),
    };
    let job = d
        .origin
        .job
        .map(|j| format!(" (job {j})"))
        .unwrap_or_default();
    outln!("  from:     {origin}, {}{job}", d.origin.at);
    if let Some(r) = &d.reseed {
        let next = r.next.as_deref().unwrap_or("never");
        outln!("  reseed:   {} ({}), next {next}", r.cron, r.timezone);
        if let (Some(tick), Some(result)) = (&r.last_tick, &r.last_result) {
            outln!("            last tick {tick}: {result}");
        }
    }
    if d.attachments.is_empty() {
        return;
    }
    outln!("  attached (each variable reaches the instances at their next restart or deploy):");
    let mut t = table(&["VARIABLE", "DATABASE OF", "MODE"]);
    for a in &d.attachments {
        t.add_row(vec![a.var.clone(), a.to.clone(), a.mode.to_string()]);
    }
    outln!("{t}");
}

pub fn attached(d: &DataInfo, to: &EnvRef, json: bool) {
    if json {
        return print_json(d);
    }
    let to = to.to_string();
    if let Some(a) = d.attachments.iter().find(|a| a.to == to) {
        outln!(
            "{}/{} may {} {to}'s database through {}; its instances get the variable at their next restart or deploy (`turnout restart {}/{}`)",
            d.app,
            d.env,
            a.mode,
            a.var,
            d.app,
            d.env
        );
    }
}

pub fn detached(d: &DataInfo, to: &EnvRef, json: bool) {
    if json {
        return print_json(d);
    }
    outln!(
        "{}/{} no longer has access to {to}'s database; its instances lose the variable at their next restart or deploy",
        d.app,
        d.env
    );
}

pub fn connection(c: &DataConnection) {
    print_json(c);
}
