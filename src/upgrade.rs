//! The coordinated upgrade: a peer-relation state machine, one step per hook
//! (docs/architecture.md#upgrade-protocol).
//!
//! Owns: the meaning of the upgrade keys in the peer databags and every decision the
//! leader and the units take about them. This module is pure: it maps a snapshot
//! (app databag, the units' databags, local facts) to the next step; `charm` performs
//! the step's effects and writes the returned state.
//!
//! App databag (leader): `upgrade-phase` ∈ idle|prepare|downloading|complete|failed,
//! `upgrade-gen`, `upgrade-target`, `upgrade-from`, `upgrade-grant` (`<gen>:<u1>,<u2>`),
//! `upgrade-error`, `upgrade-rollback`, `release-version` (what every unit runs
//! when no upgrade is under way) and `config-version` (the version the configuration
//! asked for when the leader last acted on it: the `version` option, or the latest
//! release when the option is empty), `upgrade-ack-from` (`<gen>:<u1>,…`: the units
//! that must acknowledge prepare; without it, every unit), `upgrade-progress` (the leader's [`progress`]
//! line as of its last write). Unit databag: `version` (running), `upgrade-ack`
//! (`<gen>:<phase>`), `upgrade-state` (`<gen>:ready|switched|failed`), `upgrade-error`.
//!
//! Invariants: the generation only grows; a grant names units of the current
//! generation only; web units are granted alone and before any worker; at most
//! `upgrade-max-unavailable` workers hold a grant; a unit that failed makes the leader
//! roll every switched unit back with the same protocol (target = from). Nothing here
//! compares timestamps written by different machines.
//! Hazards: every decision must be safe to repeat (hooks are retried and coalesce), and
//! must not depend on the leader being notified of its own app-data writes.

use std::collections::BTreeMap;
use std::fmt;

/// Upgrade phase in the app databag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Phase {
    #[default]
    Idle,
    Prepare,
    Downloading,
    Complete,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Prepare => "prepare",
            Phase::Downloading => "downloading",
            Phase::Complete => "complete",
            Phase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "idle" => Phase::Idle,
            "prepare" => Phase::Prepare,
            "downloading" => Phase::Downloading,
            "complete" => Phase::Complete,
            "failed" => Phase::Failed,
            _ => return None,
        })
    }

    /// Whether an upgrade generation is in flight.
    pub fn running(self) -> bool {
        matches!(self, Phase::Prepare | Phase::Downloading | Phase::Complete)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit's own upgrade state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Ready,
    Switched,
    Failed,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Ready => "ready",
            UnitState::Switched => "switched",
            UnitState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Option<UnitState> {
        Some(match s {
            "ready" => UnitState::Ready,
            "switched" => UnitState::Switched,
            "failed" => UnitState::Failed,
            _ => return None,
        })
    }
}

pub const K_PHASE: &str = "upgrade-phase";
pub const K_GEN: &str = "upgrade-gen";
pub const K_TARGET: &str = "upgrade-target";
pub const K_FROM: &str = "upgrade-from";
pub const K_GRANT: &str = "upgrade-grant";
pub const K_SKIPPED: &str = "upgrade-skipped";
pub const K_ERROR: &str = "upgrade-error";
pub const K_ROLLBACK: &str = "upgrade-rollback";
pub const K_RELEASE: &str = "release-version";
pub const K_CONFIG_VERSION: &str = "config-version";
/// The leader's line on where the upgrade is ([`progress`]), written only with another
/// change of the app databag: non-leaders show it without reading every unit's databag.
pub const K_PROGRESS: &str = "upgrade-progress";
pub const K_ACK_FROM: &str = "upgrade-ack-from";
pub const K_VERSION: &str = "version";
pub const K_ACK: &str = "upgrade-ack";
pub const K_STATE: &str = "upgrade-state";

/// The application's upgrade state (peer app databag).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppUpgrade {
    pub phase: Phase,
    pub gen: u64,
    pub target: String,
    pub from: String,
    pub grant: Vec<String>,
    /// Units the leader stopped waiting for in this generation: granted, they did not
    /// switch within the grant timeout (a lost or never-started unit). They catch up
    /// when they come back.
    pub skipped: Vec<String>,
    pub error: String,
    pub rollback: bool,
    /// The version every unit runs when idle ("" before the first install).
    pub release: String,
    /// The configuration's version the leader has acted on: only a change of it is a
    /// new request, so a `config-changed` for another option never undoes an action.
    pub config_version: String,
    /// The units that must acknowledge `prepare` in this generation (`None`: every
    /// unit). The leader names the units whose use of the volume it cannot see on the
    /// volume itself, and one other to wake it: every acknowledgement wakes every unit.
    pub ack_from: Option<Vec<String>>,
}

fn parse_gen_pair(s: &str) -> Option<(u64, &str)> {
    let (g, rest) = s.split_once(':')?;
    Some((g.parse().ok()?, rest))
}

impl AppUpgrade {
    /// Reads the app databag. Malformed values never panic: an unknown phase reads as
    /// idle, a malformed grant as no grant (the leader rewrites both).
    pub fn from_bag(bag: &BTreeMap<String, String>) -> AppUpgrade {
        let get = |k: &str| bag.get(k).map(|s| s.trim().to_string()).unwrap_or_default();
        let gen = get(K_GEN).parse().unwrap_or(0);
        // `<gen>:<u1>,<u2>`; a list of another generation reads as empty
        let units_of_gen = |k: &str| match parse_gen_pair(&get(k)) {
            Some((g, units)) if g == gen => units
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        };
        let grant = units_of_gen(K_GRANT);
        let skipped = units_of_gen(K_SKIPPED);
        // `<gen>:` (nobody) differs from no list of this generation (everybody)
        let ack_from = match parse_gen_pair(&get(K_ACK_FROM)) {
            Some((g, _)) if g == gen => Some(units_of_gen(K_ACK_FROM)),
            _ => None,
        };
        AppUpgrade {
            // Missing (never written) and unknown phases read as idle.
            phase: Phase::parse(&get(K_PHASE)).unwrap_or(Phase::Idle),
            gen,
            target: get(K_TARGET),
            from: get(K_FROM),
            grant,
            skipped,
            error: get(K_ERROR),
            rollback: get(K_ROLLBACK) == "true",
            release: get(K_RELEASE),
            config_version: get(K_CONFIG_VERSION),
            ack_from,
        }
    }

    /// The full app databag content (empty values delete keys).
    pub fn to_bag(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(K_PHASE.into(), self.phase.as_str().into());
        m.insert(K_GEN.into(), self.gen.to_string());
        m.insert(K_TARGET.into(), self.target.clone());
        m.insert(K_FROM.into(), self.from.clone());
        let of_gen = |units: &[String]| {
            if units.is_empty() {
                String::new()
            } else {
                format!("{}:{}", self.gen, units.join(","))
            }
        };
        m.insert(K_GRANT.into(), of_gen(&self.grant));
        m.insert(K_SKIPPED.into(), of_gen(&self.skipped));
        m.insert(K_ERROR.into(), self.error.clone());
        m.insert(
            K_ROLLBACK.into(),
            if self.rollback {
                "true".into()
            } else {
                String::new()
            },
        );
        m.insert(K_RELEASE.into(), self.release.clone());
        m.insert(K_CONFIG_VERSION.into(), self.config_version.clone());
        m.insert(
            K_ACK_FROM.into(),
            match &self.ack_from {
                Some(units) => format!("{}:{}", self.gen, units.join(",")),
                None => String::new(),
            },
        );
        m
    }

    /// Whether `unit` must acknowledge `prepare` in this generation.
    pub fn must_ack(&self, unit: &str) -> bool {
        self.ack_from
            .as_ref()
            .is_none_or(|units| units.iter().any(|u| u == unit))
    }
}

impl AppUpgrade {
    /// A generation that only brings stray units to the application's release (see
    /// [`catch_up`]): nothing new is installed and nobody else moves.
    pub fn is_catch_up(&self) -> bool {
        self.phase.running()
            && !self.rollback
            && !self.release.is_empty()
            && self.target == self.release
    }
}

/// One unit as the leader (or a unit) sees it in the peer relation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitReport {
    pub name: String,
    pub web: bool,
    pub version: Option<String>,
    pub ack: Option<(u64, Phase)>,
    pub state: Option<(u64, UnitState)>,
    pub error: String,
}

impl UnitReport {
    /// Reads a unit databag.
    pub fn from_bag(name: &str, web: bool, bag: &BTreeMap<String, String>) -> UnitReport {
        let get = |k: &str| {
            bag.get(k)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let ack = get(K_ACK).and_then(|s| {
            let (g, p) = parse_gen_pair(&s)?;
            Some((g, Phase::parse(p)?))
        });
        let state = get(K_STATE).and_then(|s| {
            let (g, st) = parse_gen_pair(&s)?;
            Some((g, UnitState::parse(st)?))
        });
        UnitReport {
            name: name.to_string(),
            web,
            version: get(K_VERSION),
            ack,
            state,
            error: get(K_ERROR).unwrap_or_default(),
        }
    }

    fn acked(&self, gen: u64, phase: Phase) -> bool {
        matches!(self.ack, Some((g, p)) if g > gen || (g == gen && p >= phase))
    }

    fn failed(&self, gen: u64) -> bool {
        self.state == Some((gen, UnitState::Failed))
    }

    fn on(&self, version: &str) -> bool {
        self.version.as_deref() == Some(version)
    }
}

/// Why an upgrade cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("an upgrade to v{target} is already running (generation {gen}, phase {phase})")]
    SameRunning {
        target: String,
        gen: u64,
        phase: Phase,
    },
    #[error("an upgrade to v{target} is running (phase {phase}); wait for it to finish before upgrading to v{requested}")]
    OtherRunning {
        target: String,
        requested: String,
        phase: Phase,
    },
    #[error("the application already runs v{0}")]
    AlreadyOn(String),
    #[error("v{requested} is older than the running v{running}: a downgrade must be asked for explicitly")]
    Downgrade { running: String, requested: String },
}

/// Whether `target` is older than `running` (versions that do not parse never are).
pub fn is_downgrade(running: &str, target: &str) -> bool {
    crate::installer::latest::compare_versions(target, running) == Some(std::cmp::Ordering::Less)
}

/// Starts an upgrade to `target`: the new app state (phase prepare, next generation).
/// An older target is refused unless `allow_downgrade`.
pub fn start(
    app: &AppUpgrade,
    target: &str,
    allow_downgrade: bool,
) -> Result<AppUpgrade, StartError> {
    if app.phase.running() {
        return Err(if app.target == target && !app.rollback {
            StartError::SameRunning {
                target: target.into(),
                gen: app.gen,
                phase: app.phase,
            }
        } else {
            StartError::OtherRunning {
                target: app.target.clone(),
                requested: target.into(),
                phase: app.phase,
            }
        });
    }
    if app.release == target {
        return Err(StartError::AlreadyOn(target.into()));
    }
    if !allow_downgrade && is_downgrade(&app.release, target) {
        return Err(StartError::Downgrade {
            running: app.release.clone(),
            requested: target.into(),
        });
    }
    Ok(next_generation(app, Phase::Prepare, target, &app.release))
}

/// The next generation of `app`, moving units from `from` to `target`, in `phase`, with
/// nothing granted, skipped or failed yet.
fn next_generation(app: &AppUpgrade, phase: Phase, target: &str, from: &str) -> AppUpgrade {
    AppUpgrade {
        phase,
        gen: app.gen + 1,
        target: target.to_string(),
        from: from.to_string(),
        grant: Vec::new(),
        skipped: Vec::new(),
        error: String::new(),
        rollback: false,
        ack_from: None,
        ..app.clone()
    }
}

/// A failed upgrade ends when the operator asks for the version the application runs:
/// back to idle, the error cleared. `None` when there is no failure to settle.
pub fn settle(app: &AppUpgrade) -> Option<AppUpgrade> {
    (app.phase == Phase::Failed).then(|| AppUpgrade {
        phase: Phase::Idle,
        error: String::new(),
        grant: Vec::new(),
        rollback: false,
        ..app.clone()
    })
}

/// What the configuration's version (`wanted`) asks of the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigRequest {
    /// Acted on already: the application's own target stands (an action may have
    /// moved it since, and the last request wins).
    Seen,
    /// Write this app state: the first version, a new upgrade, a settled failure, or
    /// just the request recorded.
    Write(AppUpgrade),
    /// Another upgrade is running: the request is taken when it ends.
    Later(StartError),
    /// The option asks for an older version than the application runs: refused until
    /// the operator aligns the option or downgrades with the action.
    Downgrade { running: String, requested: String },
}

/// How a configuration request is recorded in `config-version`: the pinned version, or
/// `latest:<version>` when the option is empty (so pinning the version that is also the
/// latest release is still a change of the option).
pub fn request_key(wanted: &str, tracks_latest: bool) -> String {
    if tracks_latest {
        format!("latest:{wanted}")
    } else {
        wanted.to_string()
    }
}

/// Decides what the configuration's version means now. Only a *change* of it (against
/// `config_version`) is a new request; the decision is safe to repeat.
pub fn config_request(app: &AppUpgrade, wanted: &str, tracks_latest: bool) -> ConfigRequest {
    let key = request_key(wanted, tracks_latest);
    let seen = AppUpgrade {
        config_version: key.clone(),
        ..app.clone()
    };
    if app.release.is_empty() {
        return ConfigRequest::Write(AppUpgrade {
            release: wanted.to_string(),
            ..seen
        });
    }
    if app.config_version == key {
        return ConfigRequest::Seen;
    }
    if app.release == wanted && !app.phase.running() {
        return ConfigRequest::Write(settle(&seen).unwrap_or(seen));
    }
    match start(app, wanted, false) {
        Ok(next) => ConfigRequest::Write(AppUpgrade {
            config_version: key,
            ..next
        }),
        // the running upgrade is this request: record it
        Err(StartError::SameRunning { .. }) => ConfigRequest::Write(seen),
        Err(StartError::Downgrade { running, requested }) => {
            ConfigRequest::Downgrade { running, requested }
        }
        Err(e) => ConfigRequest::Later(e),
    }
}

/// After a failure before any unit switched (download, checksum, prepare), the same
/// request is tried again; the caller decides when (never from the hook the failure
/// itself caused). A rolled-back or settled upgrade is not retried.
pub fn retry_failed(app: &AppUpgrade) -> Option<AppUpgrade> {
    if app.phase != Phase::Failed || app.rollback || app.target.is_empty() {
        return None;
    }
    if app.target == app.release || app.from == app.target {
        return None;
    }
    start(app, &app.target, true).ok()
}

/// How the `version` option and the running version differ while idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionNote {
    /// An action moved the application away from the option, which was acted on.
    Stale { option: String, running: String },
    /// The option asks for an older version and was refused (not recorded).
    Downgrade { option: String, running: String },
}

impl OptionNote {
    /// How to align the option with what runs.
    pub fn text(&self, app_name: &str) -> String {
        match self {
            OptionNote::Stale { option, running } => format!(
                "the version option says {option}; align it with: juju config {app_name} version={running}"
            ),
            OptionNote::Downgrade { option, running } => format!(
                "version={option} is older than the running v{running}: not downgrading; set version={running} or run: juju run {app_name}/leader upgrade version={option} allow-downgrade=true"
            ),
        }
    }
}

/// What `juju status` should say when the running version and the `version` option
/// differ while idle.
pub fn option_note(app: &AppUpgrade, option: Option<&str>) -> Option<OptionNote> {
    let option = option?;
    if app.release.is_empty() || option == app.release || app.phase.running() {
        return None;
    }
    let (option, running) = (option.to_string(), app.release.clone());
    if app.config_version != option && is_downgrade(&running, &option) {
        return Some(OptionNote::Downgrade { option, running });
    }
    Some(OptionNote::Stale { option, running })
}

/// A generation that brings units running `stray` back to the application's release
/// (phase complete at once: the release is already published). From idle only.
pub fn catch_up(app: &AppUpgrade, stray: &str) -> AppUpgrade {
    next_generation(app, Phase::Complete, &app.release, stray)
}

/// While idle, a catch-up generation for the first unit that runs another version than
/// the application. A unit whose last catch-up failed is tried again only when
/// `retry_now` (update-status, config-changed), never from the hook its failure caused.
pub fn next_catch_up(
    app: &AppUpgrade,
    units: &[UnitReport],
    retry_now: bool,
) -> Option<AppUpgrade> {
    if app.phase != Phase::Idle || app.release.is_empty() {
        return None;
    }
    let odd = units
        .iter()
        .filter(|u| u.version.as_deref().is_some_and(|v| v != app.release))
        .find(|u| retry_now || !(u.failed(app.gen) || app.skipped.contains(&u.name)))?;
    Some(catch_up(app, odd.version.as_deref().unwrap_or_default()))
}

/// What the leader sees.
#[derive(Debug, Clone)]
pub struct LeaderView<'a> {
    pub app: &'a AppUpgrade,
    /// Current members of the application, the leader included, in any order.
    pub units: &'a [UnitReport],
    /// The target release is published on the leader's volume.
    pub target_published: bool,
    pub max_unavailable: usize,
    /// The leader's own clock says units had long enough to acknowledge `prepare`.
    pub prepare_timed_out: bool,
    /// The leader's own clock says the current grant is older than the grant timeout
    /// (longer than a worker may take to land): its holders are skipped.
    pub grant_expired: bool,
}

/// The leader's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderStep {
    /// Nothing to do until another unit reports; the text says what we wait for.
    Wait(String),
    /// Install the target release (one download, under the volume lock), then decide again.
    Download,
    /// Write this app state.
    Write(AppUpgrade),
    /// Every unit runs the target: write this final state, record the installed
    /// version and prune releases other than `release` and `from`.
    Finish(AppUpgrade),
}

/// Orders units for granting: web units first, then workers, each by unit number.
fn ordered(units: &[UnitReport]) -> Vec<&UnitReport> {
    let mut v: Vec<&UnitReport> = units.iter().collect();
    v.sort_by_key(|u| {
        let n = crate::juju::context::split_unit_name(&u.name)
            .map(|(_, n)| n)
            .unwrap_or(u32::MAX);
        (!u.web, n, u.name.clone())
    });
    v
}

/// The next grant: the first pending web unit alone, else up to `max` pending workers.
fn next_grant(pending: &[&UnitReport], max: usize) -> Vec<String> {
    match pending.first() {
        None => Vec::new(),
        Some(first) if first.web => vec![first.name.clone()],
        Some(_) => pending
            .iter()
            .filter(|u| !u.web)
            .take(max.max(1))
            .map(|u| u.name.clone())
            .collect(),
    }
}

/// Decides the leader's next step from a snapshot.
pub fn leader_step(v: &LeaderView) -> LeaderStep {
    match v.app.phase {
        Phase::Idle | Phase::Failed => LeaderStep::Wait(String::new()),
        Phase::Prepare | Phase::Downloading => before_switching(v),
        Phase::Complete if v.app.is_catch_up() => catching_up(v),
        Phase::Complete => switching(v),
    }
}

/// Phases prepare and downloading: acknowledgements, then one download, then grants.
fn before_switching(v: &LeaderView) -> LeaderStep {
    let app = v.app;
    let gen = app.gen;
    if let Some(bad) = v.units.iter().find(|u| u.failed(gen)) {
        return LeaderStep::Write(AppUpgrade {
            phase: Phase::Failed,
            grant: Vec::new(),
            error: format!("{}: {}", bad.name, or_unknown(&bad.error)),
            ..app.clone()
        });
    }
    if app.phase == Phase::Prepare {
        let missing: Vec<&str> = v
            .units
            .iter()
            .filter(|u| app.must_ack(&u.name) && !u.acked(gen, Phase::Prepare))
            .map(|u| u.name.as_str())
            .collect();
        if missing.is_empty() || v.prepare_timed_out {
            return LeaderStep::Write(AppUpgrade {
                phase: Phase::Downloading,
                ..app.clone()
            });
        }
        return LeaderStep::Wait(format!(
            "waiting for {} to acknowledge the upgrade",
            missing.join(", ")
        ));
    }
    if !v.target_published {
        return LeaderStep::Download;
    }
    let pending: Vec<&UnitReport> = ordered(v.units)
        .into_iter()
        .filter(|u| !u.on(&app.target))
        .collect();
    LeaderStep::Write(AppUpgrade {
        phase: Phase::Complete,
        grant: next_grant(&pending, v.max_unavailable),
        ..app.clone()
    })
}

/// A catch-up generation in phase complete.
fn catching_up(v: &LeaderView) -> LeaderStep {
    let app = v.app;
    let gen = app.gen;
    // Only the stray units take part; one that fails stays on its version and is
    // marked failed (never a rollback of everybody to a stray version).
    let failed: Vec<&UnitReport> = v.units.iter().filter(|u| u.failed(gen)).collect();
    let pending: Vec<&UnitReport> = pending_on(app, v.units, &app.target)
        .into_iter()
        .filter(|u| !u.failed(gen))
        .collect();
    if pending.is_empty() {
        let mut problems: Vec<String> = failed
            .iter()
            .map(|u| format!("catch-up failed on {}: {}", u.name, or_unknown(&u.error)))
            .collect();
        problems.extend(skipped_note(app));
        return LeaderStep::Finish(AppUpgrade {
            phase: Phase::Idle,
            grant: Vec::new(),
            error: problems.join("; "),
            ..app.clone()
        });
    }
    grant_step(v, &pending)
}

/// Phase complete of an upgrade or a rollback: grants, failure and rollback, the end.
fn switching(v: &LeaderView) -> LeaderStep {
    let app = v.app;
    let gen = app.gen;
    if let Some(bad) = v.units.iter().find(|u| u.failed(gen)) {
        let error = format!("{}: {}", bad.name, or_unknown(&bad.error));
        if app.rollback {
            return LeaderStep::Write(AppUpgrade {
                phase: Phase::Failed,
                grant: Vec::new(),
                error: format!("rollback to v{} failed on {error}", app.target),
                rollback: false,
                ..app.clone()
            });
        }
        // Roll back every unit to `from` with the same protocol.
        let pending: Vec<&UnitReport> = ordered(v.units)
            .into_iter()
            .filter(|u| !u.on(&app.from))
            .collect();
        return LeaderStep::Write(AppUpgrade {
            phase: Phase::Complete,
            gen: gen + 1,
            target: app.from.clone(),
            from: app.target.clone(),
            grant: next_grant(&pending, v.max_unavailable),
            skipped: Vec::new(),
            error: format!("upgrade to v{} failed on {error}", app.target),
            rollback: true,
            ack_from: None,
            ..app.clone()
        });
    }
    let pending = pending_on(app, v.units, &app.target);
    if pending.is_empty() {
        return LeaderStep::Finish(if app.rollback {
            AppUpgrade {
                phase: Phase::Failed,
                grant: Vec::new(),
                rollback: false,
                release: app.target.clone(),
                ..app.clone()
            }
        } else {
            AppUpgrade {
                phase: Phase::Idle,
                grant: Vec::new(),
                error: skipped_note(app).unwrap_or_default(),
                release: app.target.clone(),
                ..app.clone()
            }
        });
    }
    grant_step(v, &pending)
}

/// Members not on `version` yet, in grant order, without the units skipped this generation.
fn pending_on<'a>(app: &AppUpgrade, units: &'a [UnitReport], version: &str) -> Vec<&'a UnitReport> {
    ordered(units)
        .into_iter()
        .filter(|u| !u.on(version) && !app.skipped.contains(&u.name))
        .collect()
}

/// What the application status says about skipped units, if any.
fn skipped_note(app: &AppUpgrade) -> Option<String> {
    (!app.skipped.is_empty()).then(|| {
        format!(
            "{} did not switch to v{} in time and {} skipped (a lost unit? it catches up when it returns, or remove it with juju remove-unit)",
            app.skipped.join(", "),
            app.target,
            if app.skipped.len() == 1 { "was" } else { "were" }
        )
    })
}

/// While units are pending in phase complete: wait for the granted ones (skip them once
/// the grant expired), else grant the next.
fn grant_step(v: &LeaderView, pending: &[&UnitReport]) -> LeaderStep {
    let app = v.app;
    let busy: Vec<String> = pending
        .iter()
        .filter(|u| app.grant.contains(&u.name))
        .map(|u| u.name.clone())
        .collect();
    if !busy.is_empty() && v.grant_expired {
        let mut skipped = app.skipped.clone();
        skipped.extend(busy);
        return LeaderStep::Write(AppUpgrade {
            grant: Vec::new(),
            skipped,
            ..app.clone()
        });
    }
    if !busy.is_empty() {
        return LeaderStep::Wait(format!(
            "waiting for {} to switch to v{}",
            busy.join(", "),
            app.target
        ));
    }
    let grant = next_grant(pending, v.max_unavailable);
    if grant == app.grant {
        return LeaderStep::Wait(String::new());
    }
    LeaderStep::Write(AppUpgrade {
        grant,
        ..app.clone()
    })
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "no reason given"
    } else {
        s
    }
}

/// What a unit sees of itself.
#[derive(Debug, Clone)]
pub struct UnitView<'a> {
    pub app: &'a AppUpgrade,
    pub me: &'a UnitReport,
    /// The version this unit actually runs (its pointer), if any.
    pub running: Option<&'a str>,
    /// The unit can see the volume (and, where shared, write to it).
    pub volume_ok: bool,
}

/// A unit's next step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitStep {
    /// Acknowledge this generation and phase (`upgrade-ack`).
    pub ack: Option<(u64, Phase)>,
    /// Report failure before switching (e.g. the volume is not visible).
    pub refuse: Option<String>,
    /// Drain, switch to this version, start and verify (this unit holds a grant).
    pub switch_to: Option<String>,
}

/// Decides a unit's next step from a snapshot.
pub fn unit_step(v: &UnitView) -> UnitStep {
    let app = v.app;
    let mut step = UnitStep::default();
    if app.gen == 0 || app.phase == Phase::Idle {
        return step;
    }
    // Acks of prepare gate the download; acks of downloading wake the leader when Juju
    // does not notify it of its own write. Later phases need none: a switched unit's
    // `version` is what moves the leader on, and every ack costs a hook on every peer.
    let asked = app.phase == Phase::Downloading || app.must_ack(&v.me.name);
    if matches!(app.phase, Phase::Prepare | Phase::Downloading)
        && v.me.ack != Some((app.gen, app.phase))
        && asked
    {
        step.ack = Some((app.gen, app.phase));
    }
    if app.phase == Phase::Prepare && !v.volume_ok && !v.me.failed(app.gen) {
        step.refuse = Some("the release volume is not usable on this unit".into());
        return step;
    }
    // A granted unit switches until it both runs the target and reported it: a switch
    // hook that failed after the pointer moved is done again (restart, verification) by
    // its retry, which finds the pointer already on the target.
    let done = v.running == Some(app.target.as_str()) && v.me.on(&app.target);
    if app.phase == Phase::Complete
        && app.grant.contains(&v.me.name)
        && !done
        && !v.me.failed(app.gen)
    {
        step.switch_to = Some(app.target.clone());
    }
    step
}

/// One line on where the upgrade is, for statuses (`Upgrading to v7.14.3: waiting for 2 of 4 workers`).
pub fn progress(app: &AppUpgrade, units: &[UnitReport]) -> String {
    let verb = if app.rollback {
        "Rolling back to"
    } else {
        "Upgrading to"
    };
    match app.phase {
        Phase::Idle => String::new(),
        Phase::Failed => format!("Upgrade failed: {}", or_unknown(&app.error)),
        Phase::Prepare => {
            let n = units
                .iter()
                .filter(|u| app.must_ack(&u.name) && !u.acked(app.gen, Phase::Prepare))
                .count();
            if n == 0 {
                format!("{verb} v{}: all {} units prepared", app.target, units.len())
            } else {
                format!(
                    "{verb} v{}: waiting for {n} of {} units to prepare",
                    app.target,
                    units.len()
                )
            }
        }
        Phase::Downloading => format!("{verb} v{}: downloading the release", app.target),
        Phase::Complete => {
            let workers: Vec<&UnitReport> = units.iter().filter(|u| !u.web).collect();
            let webs_pending = units.iter().filter(|u| u.web && !u.on(&app.target)).count();
            let workers_pending = workers.iter().filter(|u| !u.on(&app.target)).count();
            if webs_pending > 0 {
                format!("{verb} v{}: switching web", app.target)
            } else {
                format!(
                    "{verb} v{}: waiting for {workers_pending} of {} workers",
                    app.target,
                    workers.len()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
