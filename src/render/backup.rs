//! Backups as the terminal shows them: `turnout backup list|show|delete|policy`.
use super::*;
use turnout_model::{BackupInfo, BackupList};

fn schedule(l: &BackupList) -> String {
    if l.schedule.is_empty() {
        format!("none ({})", l.schedule_from)
    } else {
        format!("{} ({})", l.schedule.join(" "), l.schedule_from)
    }
}

fn state(b: &BackupInfo) -> String {
    let mut s = b.state.clone();
    match (&b.verified_at, &b.verify_error) {
        (Some(_), Some(_)) => s.push_str(", verify failed"),
        (Some(_), None) => s.push_str(", verified"),
        _ => {}
    }
    s
}

pub fn list(l: &BackupList, json: bool) {
    if json {
        return print_json(l);
    }
    outln!("{}: backups", l.env);
    outln!("  schedule:    {}", schedule(l));
    outln!("  restore to:  {}", l.error_bound);
    if let Some((from, to)) = &l.pitr_window {
        outln!("  WAL window:  {from} to {to}");
    }
    outln!("  repository:  {}", format_bytes(l.repository_bytes));
    if l.backups.is_empty() {
        outln!(
            "no snapshots yet: take one with `turnout backup create {}`",
            l.env
        );
    } else {
        let mut t = table(&[
            "ID", "TAKEN", "KIND", "STATE", "KEPT", "PINNED", "SIZE", "STORED", "LABEL",
        ]);
        for b in &l.backups {
            t.add_row(vec![
                b.id.to_string(),
                b.taken_at.clone(),
                b.kind.clone(),
                state(b),
                if b.kept { "yes" } else { "no" }.to_owned(),
                if b.pinned { "pinned" } else { "" }.to_owned(),
                format_bytes(b.logical_bytes),
                format_bytes(b.stored_bytes),
                b.label.clone().unwrap_or_default(),
            ]);
        }
        outln!("{t}");
    }
    if !l.drills.is_empty() {
        outln!("drills:");
        let mut t = table(&["ID", "STARTED", "TARGET", "STATE", "RTO", "RPO", "ERROR"]);
        for d in &l.drills {
            t.add_row(vec![
                d.id.to_string(),
                d.started_at.clone(),
                d.target_at.clone(),
                d.state.clone(),
                d.rto_ms
                    .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_default(),
                d.rpo_secs.map(|s| format!("{s}s")).unwrap_or_default(),
                d.error.clone().unwrap_or_default(),
            ]);
        }
        outln!("{t}");
    }
}

pub fn show(b: &BackupInfo, json: bool) {
    if json {
        return print_json(b);
    }
    outln!(
        "backup {} of {}: {} generation {}, {}",
        b.id,
        b.env,
        b.engine,
        b.generation,
        b.kind
    );
    outln!("  state:     {}", b.state);
    outln!("  taken at:  {}", b.taken_at);
    if let Some(done) = &b.completed_at {
        outln!("  completed: {done}");
    }
    if let Some(label) = &b.label {
        outln!("  label:     {label}");
    }
    outln!(
        "  kept:      {}{}",
        if b.kept {
            "yes"
        } else {
            "no (retention deletes it)"
        },
        if b.pinned { ", pinned" } else { "" }
    );
    if let (Some(release), Some(commit)) = (b.release_id, &b.commit) {
        outln!("  release:   {release} ({})", short(commit));
    }
    outln!(
        "  size:      {} of data, {} stored",
        format_bytes(b.logical_bytes),
        format_bytes(b.stored_bytes)
    );
    outln!("  by:        {}", b.created_by);
    match (&b.verified_at, &b.verify_error) {
        (Some(at), None) => outln!("  verified:  {at}, passed"),
        (Some(at), Some(e)) => outln!("  verified:  {at}, FAILED: {e}"),
        _ => outln!("  verified:  never (`turnout backup verify {}`)", b.id),
    }
}

pub fn deleted(b: &BackupInfo, json: bool) {
    if json {
        return print_json(b);
    }
    outln!("deleted backup {} of {} ({})", b.id, b.env, b.taken_at);
}

pub fn policy(l: &BackupList, json: bool) {
    if json {
        return print_json(l);
    }
    outln!("{}: backup schedule {}", l.env, schedule(l));
    outln!("  restore to:  {}", l.error_bound);
}
