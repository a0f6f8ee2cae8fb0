//! `turnout pipeline schedule`: scheduled cuts.
use turnout_model::ScheduleInfo;

use super::*;

pub fn schedule_added(s: &ScheduleInfo, json: bool) {
    if json {
        return print_json(s);
    }
    outln!(
        "schedule {}: promote {app}/{} to {app}/{} at \"{}\" in time zone {}, as {}",
        s.id,
        s.from,
        s.to,
        s.cron,
        s.tz,
        s.created_by,
        app = s.app
    );
    if let Some(next) = &s.next_tick {
        outln!("next cut: {next}");
    }
}

pub fn schedules(list: &[ScheduleInfo], json: bool) {
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        outln!(
            "no scheduled cuts: add one with `turnout pipeline schedule add APP --promote FROM:TO --cron \"0 17 * * FRI\" --tz Europe/Berlin`"
        );
        return;
    }
    let mut t = table(&[
        "ID", "PROMOTE", "CRON", "TZ", "NEXT", "LAST", "RESULT", "AS",
    ]);
    for s in list {
        t.add_row(vec![
            s.id.to_string(),
            format!("{} → {}", s.from, s.to),
            s.cron.clone(),
            s.tz.clone(),
            s.next_tick.clone().unwrap_or_else(|| "-".into()),
            s.last_tick.clone(),
            s.last_result.clone().unwrap_or_else(|| "-".into()),
            s.created_by.clone(),
        ]);
    }
    outln!("{t}");
}
