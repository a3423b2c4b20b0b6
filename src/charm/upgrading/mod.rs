//! The upgrade state machine's effects: choosing the version, the leader's steps, a unit's
//! switch, and the `upgrade` action. The decisions are in `crate::upgrade`; the protocol is
//! described in docs/architecture.md#upgrade-protocol.
//!
//! Owns: [`desired`] (the version the application should run, and the cached latest
//! release), [`leader`] (the leader's steps), [`unit`] (acknowledging, switching,
//! verifying a switch) and [`action`] (the `upgrade` action); here, the members as the
//! upgrade sees them and the application's status.
//! Invariants: every cross-unit step is its own hook (the leader writes and exits when other
//! units must react; with no peers it takes the steps back to back); a unit switches only
//! while it holds a grant for the current generation, lands its worker first, and goes back
//! to the previous release when the new one does not start; the leader's clock alone times
//! the prepare phase. Hazards: landing a worker can take up to `drain-timeout`, inside the
//! granted unit's hook (a local wait, never a wait for another unit).

mod action;
mod desired;
mod leader;
mod unit;

pub use action::action;
pub use leader::{leader, leader_steps, GRANT_MARGIN, PREPARE_TIMEOUT};
pub use unit::{publish_progress, report_progress, unit, verify_switch, Switch, UnitOutcome};

use super::peers::{self, Peers};
use super::status::messages as msg;
use crate::config::CharmConfig;
use crate::juju::{Juju, Status};
use crate::roles::roles_for;
use crate::upgrade::{self, AppUpgrade, OptionNote, Phase, UnitReport};

/// Every member as the upgrade sees it (own bag includes this hook's writes).
pub fn reports_of(juju: &Juju, config: &CharmConfig, peers: &Peers) -> Vec<UnitReport> {
    let me = juju.unit_name();
    let web_unit = peers.app_value(peers::WEB_UNIT);
    peers
        .members(me)
        .into_iter()
        .filter_map(|u| {
            let bag = peers.bag(me, &u)?;
            let web = roles_for(config.mode, &u, web_unit)
                .map(|r| r.web)
                .unwrap_or(false);
            Some(UnitReport::from_bag(&u, web, bag))
        })
        .collect()
}

/// Names who must acknowledge the prepare phase of `next` when it starts a generation
/// (leader only): on a shared volume, the members whose published nonce the leader does
/// not find in their state on the volume (it cannot see that they use it), and the first
/// other member in grant order, whose acknowledgement wakes the leader. Every other
/// member proved it uses the volume already, and each acknowledgement would wake every
/// unit. Without a shared volume, every member acknowledges (no list).
pub fn name_ackers(
    juju: &Juju,
    config: &CharmConfig,
    peers: &Peers,
    app: &AppUpgrade,
    next: &mut AppUpgrade,
) -> Result<(), crate::juju::ToolError> {
    let starts = next.phase == Phase::Prepare && next.gen != app.gen;
    if !starts || config.shared_storage != crate::config::SharedStorage::Shared {
        return Ok(());
    }
    let Ok(Some(root)) = super::release::volume_root(juju) else {
        return Ok(());
    };
    let vol = crate::storage_coordinator::Volume::new(root);
    let me = juju.unit_name();
    let mut others: Vec<UnitReport> = reports_of(juju, config, peers)
        .into_iter()
        .filter(|u| u.name != me)
        .collect();
    others.sort_by_key(|u| {
        let n = crate::juju::context::split_unit_name(&u.name).map_or(u32::MAX, |(_, n)| n);
        (!u.web, n)
    });
    let proven = |u: &str| {
        peers
            .bag(me, u)
            .and_then(|b| b.get(peers::NONCE))
            .is_some_and(|n| vol.sees_nonce(u, n).unwrap_or(false))
    };
    let waker = others.first().map(|u| u.name.clone());
    let mut ackers: Vec<String> = waker.clone().into_iter().collect();
    ackers.extend(
        others
            .iter()
            .filter(|u| !proven(&u.name) && Some(&u.name) != waker.as_ref())
            .map(|u| u.name.clone()),
    );
    next.ack_from = Some(ackers);
    Ok(())
}

/// Status of the application (leader only) from the upgrade state and the `version`
/// option (`option`), which may differ from what runs after an action.
pub fn app_status(
    app: &AppUpgrade,
    units: &[UnitReport],
    option: Option<&str>,
    app_name: &str,
) -> Status {
    match app.phase {
        Phase::Idle => {
            let on = units
                .iter()
                .filter(|u| u.version.as_deref() == Some(app.release.as_str()))
                .count();
            let (release, n) = (&app.release, units.len());
            let (on, n) = (on.to_string(), n.to_string());
            match upgrade::option_note(app, option) {
                _ if release.is_empty() => msg::APP_CHOOSING_VERSION.status(),
                Some(note @ OptionNote::Downgrade { .. }) => Status::blocked(note.text(app_name)),
                _ if !app.error.is_empty() => {
                    msg::APP_UNITS_BEHIND.fill(&[release, &on, &n, &app.error])
                }
                Some(OptionNote::Stale { option, .. }) => msg::APP_READY_OPTION_STALE
                    .fill(&[release, &on, &n, &option, app_name, release]),
                None => msg::APP_READY.fill(&[release, &on, &n]),
            }
        }
        Phase::Failed => Status::blocked(format!(
            "{}; running v{}. Fix the cause, then run: juju run <leader> upgrade version={}",
            upgrade::progress(app, units),
            app.release,
            // after a rollback the failed target is `from`; a failure before any unit
            // switched leaves the target in `target`
            if app.target != app.release {
                &app.target
            } else {
                &app.from
            }
        )),
        _ => msg::APP_UPGRADING.fill(&[
            &upgrade::progress(app, units),
            &app.gen.to_string(),
            app.phase.as_str(),
        ]),
    }
}
