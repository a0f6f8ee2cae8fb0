//! Jobs as the terminal shows them: a watch's progress lines, the jobs table, one job.
use super::*;

/// Prints a job's events as they stream in: numbered steps with elapsed time, build output
/// indented under its step, and the outcome.
pub struct JobProgress {
    id: i64,
    kind: JobKind,
    target: String,
    json: bool,
    started: Instant,
    /// The last state and detail printed for each step, by index.
    printed: HashMap<u32, (StepState, String)>,
}

impl JobProgress {
    pub fn new(job: &JobInfo, json: bool) -> JobProgress {
        let target = format!("{}/{}", job.app, job.env);
        if !json {
            outln!("job {}: {} of {target}", job.id, job.kind);
        }
        JobProgress {
            id: job.id,
            kind: job.kind,
            target,
            json,
            started: Instant::now(),
            printed: HashMap::new(),
        }
    }

    /// Print one event; returns the final job once the stream says it ended.
    pub fn event<'a>(&mut self, event: &'a JobEvent) -> Option<&'a JobInfo> {
        if self.json {
            outln!("{}", serde_json::to_string(event).unwrap_or_default());
        }
        match event {
            JobEvent::Step { index, total, step } => {
                if !self.json {
                    self.step(*index, *total, step);
                }
                None
            }
            JobEvent::Output { line } => {
                if !self.json {
                    outln!("        | {line}");
                }
                None
            }
            JobEvent::End { job } => {
                if !self.json {
                    self.end(job);
                }
                Some(job)
            }
        }
    }

    /// A line when a step starts, is skipped, fails or is cancelled, and when it finishes
    /// with something new to say ("done in 1.2s", "healthy on port …"); a step that finished
    /// before anyone saw it start gets one line then. Progress updates print nothing.
    fn step(&mut self, index: u32, total: u32, step: &JobStep) {
        let before = self.printed.get(&index).cloned();
        let label = match step.state {
            StepState::Pending => return,
            StepState::Running if before.is_some() => return,
            StepState::Done if before.as_ref().is_some_and(|(_, d)| *d == step.detail) => return,
            StepState::Running | StepState::Done => "",
            StepState::Skipped => "skipped: ",
            StepState::Failed => "failed: ",
            StepState::Cancelled => "cancelled: ",
        };
        if before.as_ref().is_some_and(|(s, _)| *s == step.state) {
            return;
        }
        self.printed
            .insert(index, (step.state, step.detail.clone()));
        let elapsed = self.started.elapsed().as_secs_f64();
        outln!(
            "[{}/{total}] {:<9}{label}{}  ({elapsed:.1}s)",
            index.saturating_add(1),
            step.name,
            step.detail
        );
    }

    fn end(&self, job: &JobInfo) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let (id, kind, target) = (self.id, self.kind, &self.target);
        match job.state {
            // A drill's environment never went live: it is gone already.
            JobState::Succeeded if kind == JobKind::Drill => {
                outln!("drill of {target} passed in {elapsed:.1}s")
            }
            JobState::Succeeded if kind == JobKind::Run => {
                outln!("run in {target} ended with exit status 0 in {elapsed:.1}s")
            }
            JobState::Succeeded => outln!(
                "live: {target}{}{} in {elapsed:.1}s",
                job.release
                    .map_or(String::new(), |r| format!(" release {r}")),
                job.url
                    .as_ref()
                    .map_or(String::new(), |u| format!(" at {u}"))
            ),
            state => {
                if !job.log_tail.is_empty() {
                    let step = failed_step(job).unwrap_or("failed step's");
                    eprintln!("--- last lines of the {step} log ---");
                    for l in &job.log_tail {
                        eprintln!("  {l}");
                    }
                    eprintln!("---");
                }
                let why = job.error.as_deref().unwrap_or("no reason given");
                match (state, failed_step(job)) {
                    (JobState::Failed, Some(step)) => {
                        eprintln!("error: {kind} of {target} failed at {step}: {why}")
                    }
                    _ => eprintln!("error: {kind} of {target} (job {id}) {state}: {why}"),
                }
                match kind {
                    JobKind::Drill => eprintln!("{target} was not touched by the drill."),
                    // A run changes no traffic: there is nothing to say about what serves.
                    JobKind::Run => {}
                    JobKind::Start => {
                        eprintln!("{target} is not running: `turnout env show {target}` says why")
                    }
                    _ => eprintln!("{target} keeps serving what it served before."),
                }
            }
        }
    }
}

pub(super) fn failed_step(job: &JobInfo) -> Option<&str> {
    job.steps
        .iter()
        .find(|s| s.state == StepState::Failed)
        .map(|s| s.name.as_str())
}

pub(super) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `850ms`, `4.2s`, `3m04s`, `2h05m`.
pub(super) fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// How long the job ran (or has been running): finished (or now) minus started.
pub(super) fn job_duration(job: &JobInfo, now: i64) -> String {
    let Some(start) = job.started_at.as_deref().and_then(parse_timestamp) else {
        return "-".into();
    };
    let end = job
        .finished_at
        .as_deref()
        .and_then(parse_timestamp)
        .unwrap_or(now);
    let secs = u64::try_from(end.saturating_sub(start)).unwrap_or(0);
    duration(secs.saturating_mul(1000))
}

/// The running step, else the last one that got anywhere, as `build (3/6)`.
pub(super) fn job_step(job: &JobInfo) -> String {
    let total = job.steps.len();
    let current = job
        .steps
        .iter()
        .enumerate()
        .find(|(_, s)| s.state == StepState::Running)
        .or_else(|| {
            job.steps
                .iter()
                .enumerate()
                .rev()
                .find(|(_, s)| s.state != StepState::Pending)
        });
    match current {
        Some((i, s)) => format!("{} ({}/{total})", s.name, i + 1),
        None => "-".into(),
    }
}

/// `queued (2 in line)` while it waits for a build slot, else its state.
fn job_state(j: &JobInfo) -> String {
    match j.queue_position {
        Some(at) => format!("{} ({at} in line)", j.state),
        None => j.state.to_string(),
    }
}

pub fn jobs(jobs: &[JobInfo], json: bool) {
    if json {
        return print_json(&jobs);
    }
    if jobs.is_empty() {
        outln!("no jobs: `turnout deploy APP/ENV` starts one");
        return;
    }
    let now = now_unix();
    let mut t = table(&[
        "ID", "KIND", "TARGET", "STATE", "STEP", "ACTOR", "STARTED", "DURATION",
    ]);
    for j in jobs {
        t.add_row(vec![
            j.id.to_string(),
            j.kind.to_string(),
            format!("{}/{}", j.app, j.env),
            job_state(j),
            job_step(j),
            cut(&j.actor, 32),
            j.started_at.clone().unwrap_or_else(|| "-".into()),
            job_duration(j, now),
        ]);
    }
    outln!("{t}");
}

pub fn job(j: &JobInfo, json: bool) {
    if json {
        return print_json(j);
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    outln!("job          {}", j.id);
    outln!("kind         {}", j.kind);
    outln!("target       {}/{}", j.app, j.env);
    outln!("state        {}", job_state(j));
    outln!("actor        {}", j.actor);
    outln!("request      {}", dash(&j.request));
    outln!(
        "release      {}",
        j.release.map_or("-".into(), |r| r.to_string())
    );
    if let Some(url) = &j.url {
        outln!("url          {url}");
    }
    outln!("created      {}", j.created_at);
    outln!("started      {}", dash(&j.started_at));
    outln!("finished     {}", dash(&j.finished_at));
    outln!("duration     {}", job_duration(j, now_unix()));
    if !j.steps.is_empty() {
        outln!();
        let mut t = table(&["#", "STEP", "STATE", "DURATION", "DETAIL"]);
        for (i, s) in j.steps.iter().enumerate() {
            let progress = s
                .progress
                .as_ref()
                .map_or(String::new(), |p| match p.total {
                    Some(total) => format!(" [{}/{total} {}]", p.done, p.unit),
                    None => format!(" [{} {}]", p.done, p.unit),
                });
            t.add_row(vec![
                (i + 1).to_string(),
                s.name.clone(),
                s.state.as_str().to_owned(),
                s.duration_ms.map_or("-".into(), duration),
                format!("{}{progress}", s.detail),
            ]);
        }
        outln!("{t}");
    }
    if let Some(error) = &j.error {
        outln!();
        outln!("error        {error}");
    }
    if !j.log_tail.is_empty() {
        outln!(
            "--- last lines of the {} log ---",
            failed_step(j).unwrap_or("failed step's")
        );
        for l in &j.log_tail {
            outln!("  {l}");
        }
        outln!("---");
    }
    if !j.state.is_final() {
        outln!();
        outln!(
            "follow it with `turnout job watch {}`, cancel it with `turnout job cancel {}`",
            j.id,
            j.id
        );
    }
}

/// `--detach`: the id on stdout (for scripts), how to follow it on stderr.
pub fn job_detached(j: &JobInfo, json: bool) {
    if json {
        return print_json(j);
    }
    outln!("{}", j.id);
    eprintln!(
        "{} of {}/{} is job {}: watch it with `turnout job watch {}`, cancel it with `turnout job cancel {}`",
        j.kind, j.app, j.env, j.id, j.id, j.id
    );
}

pub fn job_cancelled(j: &JobInfo, json: bool) {
    if json {
        return print_json(j);
    }
    let what = format!("job {} ({} of {}/{})", j.id, j.kind, j.app, j.env);
    match j.state {
        JobState::Cancelled => outln!("cancelled {what}"),
        JobState::Queued | JobState::Running => outln!(
            "cancelling {what}; `turnout job watch {}` shows when it stops",
            j.id
        ),
        state => outln!("{what} had already ended: {state}"),
    }
}

pub fn env_stopped(e: &EnvInfo, json: bool) {
    if json {
        return print_json(e);
    }
    outln!(
        "stopped {app}/{env}: its URL and domains answer 503 until `turnout env start {app}/{env}`",
        app = e.app,
        env = e.name
    );
}

pub fn approved(a: &ApprovalInfo, json: bool) {
    if json {
        return print_json(a);
    }
    match a.job {
        Some(job) => outln!(
            "approved request {}: {} runs as job {job} (`turnout job watch {job}`)",
            a.id,
            a.summary
        ),
        None => outln!(
            "approved request {}: {}",
            a.id,
            a.result.as_deref().unwrap_or("done")
        ),
    }
}
