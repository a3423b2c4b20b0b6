//! Exhaustive tests of the upgrade state machine: every phase × role × leader/non-leader ×
//! acks present/missing × departed units, plus whole-protocol runs checking the invariants.

use super::*;

fn unit(n: u32, web: bool, version: &str) -> UnitReport {
    UnitReport {
        name: format!("app/{n}"),
        web,
        version: Some(version.to_string()),
        ..Default::default()
    }
}

fn app(phase: Phase, gen: u64) -> AppUpgrade {
    AppUpgrade {
        phase,
        gen,
        target: "2.0.0".into(),
        from: "1.0.0".into(),
        release: "1.0.0".into(),
        ..Default::default()
    }
}

fn view<'a>(app: &'a AppUpgrade, units: &'a [UnitReport], published: bool) -> LeaderView<'a> {
    LeaderView {
        app,
        units,
        target_published: published,
        max_unavailable: 1,
        prepare_timed_out: false,
        grant_expired: false,
    }
}

#[test]
fn bags_round_trip_and_tolerate_garbage() {
    let a = AppUpgrade {
        phase: Phase::Complete,
        gen: 7,
        target: "2.0.0".into(),
        from: "1.0.0".into(),
        grant: vec!["app/1".into(), "app/2".into()],
        skipped: vec!["app/3".into()],
        error: "x".into(),
        rollback: true,
        release: "1.0.0".into(),
        config_version: "1.0.0".into(),
        ack_from: Some(vec!["app/1".into()]),
    };
    assert_eq!(AppUpgrade::from_bag(&a.to_bag()), a);
    let nobody = AppUpgrade {
        ack_from: Some(Vec::new()),
        ..a.clone()
    };
    assert_eq!(
        AppUpgrade::from_bag(&nobody.to_bag()),
        nobody,
        "nobody is not everybody"
    );
    let everybody = AppUpgrade {
        ack_from: None,
        ..a.clone()
    };
    assert_eq!(AppUpgrade::from_bag(&everybody.to_bag()), everybody);
    let mut bag = a.to_bag();
    bag.insert(K_PHASE.into(), "exploded".into());
    bag.insert(K_GEN.into(), "-3".into());
    let b = AppUpgrade::from_bag(&bag);
    assert_eq!(b.phase, Phase::Idle);
    assert_eq!(b.gen, 0);
    assert!(b.grant.is_empty(), "grant of another generation is ignored");
    let mut bag = a.to_bag();
    bag.insert(K_GRANT.into(), "6:app/1".into());
    assert!(AppUpgrade::from_bag(&bag).grant.is_empty());
    assert_eq!(
        AppUpgrade::from_bag(&BTreeMap::new()),
        AppUpgrade::default()
    );

    let mut ub = BTreeMap::new();
    ub.insert(K_VERSION.to_string(), "1.0.0".to_string());
    ub.insert(K_ACK.to_string(), "3:downloading".to_string());
    ub.insert(K_STATE.to_string(), "3:failed".to_string());
    ub.insert(K_ERROR.to_string(), "boom".to_string());
    let u = UnitReport::from_bag("app/1", false, &ub);
    assert_eq!(u.ack, Some((3, Phase::Downloading)));
    assert_eq!(u.state, Some((3, UnitState::Failed)));
    for junk in [
        "",
        "x",
        "3",
        ":",
        "3:",
        "x:prepare",
        "3:bogus",
        "99999999999999999999999:idle",
    ] {
        ub.insert(K_ACK.to_string(), junk.to_string());
        ub.insert(K_STATE.to_string(), junk.to_string());
        let u = UnitReport::from_bag("app/1", false, &ub);
        assert_eq!((u.ack, u.state), (None, None), "{junk}");
    }
}

#[test]
fn start_rules() {
    let idle = AppUpgrade {
        release: "1.0.0".into(),
        gen: 4,
        ..Default::default()
    };
    let s = start(&idle, "2.0.0", false).unwrap();
    assert_eq!(
        (s.phase, s.gen, s.from.as_str(), s.target.as_str()),
        (Phase::Prepare, 5, "1.0.0", "2.0.0")
    );
    assert_eq!(
        start(&idle, "1.0.0", false),
        Err(StartError::AlreadyOn("1.0.0".into()))
    );
    for phase in [Phase::Prepare, Phase::Downloading, Phase::Complete] {
        let running = AppUpgrade { phase, ..s.clone() };
        assert!(matches!(
            start(&running, "2.0.0", false),
            Err(StartError::SameRunning { gen: 5, .. })
        ));
        assert!(matches!(
            start(&running, "3.0.0", false),
            Err(StartError::OtherRunning { .. })
        ));
        let rb = AppUpgrade {
            rollback: true,
            ..running.clone()
        };
        assert!(matches!(
            start(&rb, "2.0.0", false),
            Err(StartError::OtherRunning { .. })
        ));
    }
    let failed = AppUpgrade {
        phase: Phase::Failed,
        error: "x".into(),
        ..s.clone()
    };
    let again = start(&failed, "2.0.0", false).unwrap();
    assert_eq!((again.gen, again.error.as_str()), (6, ""));
}

#[test]
fn downgrades_only_when_asked() {
    let on2 = AppUpgrade {
        release: "2.0.0".into(),
        gen: 3,
        ..Default::default()
    };
    assert_eq!(
        start(&on2, "1.9.9", false),
        Err(StartError::Downgrade {
            running: "2.0.0".into(),
            requested: "1.9.9".into()
        })
    );
    assert_eq!(
        start(&on2, "2.0.0-rc.1", false).map(|a| a.target),
        Err(StartError::Downgrade {
            running: "2.0.0".into(),
            requested: "2.0.0-rc.1".into()
        })
    );
    let down = start(&on2, "1.9.9", true).unwrap();
    assert_eq!(
        (down.phase, down.target.as_str(), down.from.as_str()),
        (Phase::Prepare, "1.9.9", "2.0.0")
    );
    assert!(start(&on2, "10.0.0", false).is_ok(), "10 > 2 numerically");
}

fn pinned(release: &str, seen: &str) -> AppUpgrade {
    AppUpgrade {
        release: release.into(),
        config_version: seen.into(),
        gen: 2,
        ..Default::default()
    }
}

#[test]
fn config_request_first_version_records_the_option() {
    match config_request(&AppUpgrade::default(), "7.14.2", false) {
        ConfigRequest::Write(a) => {
            assert_eq!(
                (a.release.as_str(), a.config_version.as_str()),
                ("7.14.2", "7.14.2")
            );
            assert_eq!(a.phase, Phase::Idle);
        }
        other => panic!("{other:?}"),
    }
}

/// The story: pinned 7.14.2, the action upgraded to 7.14.3; a config-changed for another
/// option (same version value) must not bring 7.14.2 back.
#[test]
fn regression_other_option_change_does_not_undo_an_action_upgrade() {
    let after_action = pinned("7.14.3", "7.14.2");
    assert_eq!(
        config_request(&after_action, "7.14.2", false),
        ConfigRequest::Seen
    );
    // while the action's upgrade still runs, too
    let running = start(&pinned("7.14.2", "7.14.2"), "7.14.3", false).unwrap();
    assert_eq!(running.config_version, "7.14.2");
    assert_eq!(
        config_request(&running, "7.14.2", false),
        ConfigRequest::Seen
    );
}

#[test]
fn config_request_a_changed_option_is_a_new_request() {
    match config_request(&pinned("7.14.3", "7.14.2"), "8.0.0", false) {
        ConfigRequest::Write(a) => {
            assert_eq!(
                (a.phase, a.target.as_str(), a.from.as_str()),
                (Phase::Prepare, "8.0.0", "7.14.3")
            );
            assert_eq!(a.config_version, "8.0.0");
            assert_eq!(a.gen, 3);
        }
        other => panic!("{other:?}"),
    }
    // aligning the option with what runs only records it
    match config_request(&pinned("7.14.3", "7.14.2"), "7.14.3", false) {
        ConfigRequest::Write(a) => {
            assert_eq!(
                (a.phase, a.gen, a.config_version.as_str()),
                (Phase::Idle, 2, "7.14.3")
            );
        }
        other => panic!("{other:?}"),
    }
    // an older value is refused, not recorded, and asked again on every hook
    let older = config_request(&pinned("7.14.3", "7.14.3"), "7.14.2", false);
    assert_eq!(
        older,
        ConfigRequest::Downgrade {
            running: "7.14.3".into(),
            requested: "7.14.2".into()
        }
    );
}

/// Regression: with `version` empty (latest = 1.0.0), pinning `version=1.0.0` after a
/// failed upgrade must be a change of the option (it settles the failure).
#[test]
fn regression_pinning_the_latest_version_is_a_change() {
    let failed = AppUpgrade {
        phase: Phase::Failed,
        target: "1.0.0".into(),
        from: "2.0.0".into(),
        error: "rolled back".into(),
        ..pinned("1.0.0", &request_key("1.0.0", true))
    };
    assert_eq!(config_request(&failed, "1.0.0", true), ConfigRequest::Seen);
    match config_request(&failed, "1.0.0", false) {
        ConfigRequest::Write(a) => {
            assert_eq!((a.phase, a.config_version.as_str()), (Phase::Idle, "1.0.0"))
        }
        other => panic!("{other:?}"),
    }
    // a newer latest release is a new request
    assert!(matches!(
        config_request(&pinned("1.0.0", "latest:1.0.0"), "1.1.0", true),
        ConfigRequest::Write(AppUpgrade {
            phase: Phase::Prepare,
            ..
        })
    ));
}

#[test]
fn config_request_during_an_upgrade() {
    let running = start(&pinned("1.0.0", "1.0.0"), "2.0.0", false).unwrap();
    // the option now names the running upgrade's target: recorded, nothing else
    match config_request(&running, "2.0.0", false) {
        ConfigRequest::Write(a) => assert_eq!(
            a,
            AppUpgrade {
                config_version: "2.0.0".into(),
                ..running.clone()
            }
        ),
        other => panic!("{other:?}"),
    }
    // another version waits for the running one (and is not recorded)
    assert!(matches!(
        config_request(&running, "3.0.0", false),
        ConfigRequest::Later(StartError::OtherRunning { .. })
    ));
}

#[test]
fn config_request_pinning_the_running_version_settles_a_failure() {
    let failed = AppUpgrade {
        phase: Phase::Failed,
        target: "2.0.0".into(),
        from: "1.0.0".into(),
        error: "boom".into(),
        ..pinned("1.0.0", "2.0.0")
    };
    match config_request(&failed, "1.0.0", false) {
        ConfigRequest::Write(a) => {
            assert_eq!(
                (a.phase, a.error.as_str(), a.config_version.as_str()),
                (Phase::Idle, "", "1.0.0")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(settle(&pinned("1.0.0", "1.0.0")), None, "nothing to settle");
}

#[test]
fn retry_failed_only_before_any_switch() {
    let failed_download = AppUpgrade {
        phase: Phase::Failed,
        target: "2.0.0".into(),
        from: "1.0.0".into(),
        error: "bad checksum".into(),
        ..pinned("1.0.0", "2.0.0")
    };
    let again = retry_failed(&failed_download).unwrap();
    assert_eq!(
        (again.phase, again.gen, again.target.as_str()),
        (Phase::Prepare, 3, "2.0.0")
    );
    // after a rollback the application runs the target of the rollback generation
    let rolled_back = AppUpgrade {
        target: "1.0.0".into(),
        from: "2.0.0".into(),
        ..failed_download.clone()
    };
    assert_eq!(retry_failed(&rolled_back), None);
    let rolling = AppUpgrade {
        rollback: true,
        ..failed_download.clone()
    };
    assert_eq!(retry_failed(&rolling), None);
    assert_eq!(retry_failed(&pinned("1.0.0", "1.0.0")), None);
}

#[test]
fn option_note_says_how_to_align() {
    let app = pinned("7.14.3", "7.14.2");
    assert_eq!(option_note(&app, None), None, "no option, nothing to align");
    assert_eq!(option_note(&app, Some("7.14.3")), None);
    let stale = option_note(&app, Some("7.14.2")).unwrap();
    assert!(matches!(stale, OptionNote::Stale { .. }));
    assert!(stale.text("c").contains("juju config c version=7.14.3"));
    // an older option that was never acted on is a refused downgrade
    let down = option_note(&pinned("7.14.3", "7.14.3"), Some("7.14.2")).unwrap();
    assert!(matches!(down, OptionNote::Downgrade { .. }));
    let text = down.text("c");
    assert!(
        text.contains("allow-downgrade=true") && text.contains("set version=7.14.3"),
        "{text}"
    );
    let running = AppUpgrade {
        phase: Phase::Complete,
        ..app
    };
    assert_eq!(
        option_note(&running, Some("7.14.2")),
        None,
        "progress wins while upgrading"
    );
}

#[test]
fn leader_idle_and_failed_do_nothing() {
    let units = [unit(0, true, "1.0.0"), unit(1, false, "1.0.0")];
    for phase in [Phase::Idle, Phase::Failed] {
        let a = app(phase, 3);
        for published in [false, true] {
            assert!(matches!(
                leader_step(&view(&a, &units, published)),
                LeaderStep::Wait(_)
            ));
        }
    }
}

#[test]
fn prepare_waits_for_every_current_unit_or_the_timeout() {
    let a = app(Phase::Prepare, 3);
    for n in 1..=4u32 {
        // every subset of units acknowledged
        for mask in 0..(1u32 << n) {
            let units: Vec<UnitReport> = (0..n)
                .map(|i| {
                    let mut u = unit(i, i == 0, "1.0.0");
                    if mask & (1 << i) != 0 {
                        u.ack = Some((3, Phase::Prepare));
                    } else if i % 2 == 1 {
                        u.ack = Some((2, Phase::Complete)); // stale ack of an older generation
                    }
                    u
                })
                .collect();
            let all = mask == (1 << n) - 1;
            let step = leader_step(&view(&a, &units, false));
            if all {
                assert_eq!(
                    step,
                    LeaderStep::Write(AppUpgrade {
                        phase: Phase::Downloading,
                        ..a.clone()
                    })
                );
            } else {
                assert!(
                    matches!(&step, LeaderStep::Wait(w) if w.contains("acknowledge")),
                    "{step:?}"
                );
                let mut v = view(&a, &units, false);
                v.prepare_timed_out = true;
                assert!(matches!(
                    leader_step(&v),
                    LeaderStep::Write(AppUpgrade {
                        phase: Phase::Downloading,
                        ..
                    })
                ));
            }
            // a departed unit is simply absent: drop every unacked unit, the rest suffices
            let present: Vec<UnitReport> = units
                .iter()
                .filter(|u| u.ack == Some((3, Phase::Prepare)))
                .cloned()
                .collect();
            if !present.is_empty() {
                assert!(matches!(
                    leader_step(&view(&a, &present, false)),
                    LeaderStep::Write(_)
                ));
            }
        }
    }
}

#[test]
fn a_unit_refusing_prepare_fails_the_upgrade_before_download() {
    let a = app(Phase::Prepare, 3);
    let mut bad = unit(2, false, "1.0.0");
    bad.state = Some((3, UnitState::Failed));
    bad.error = "volume not visible".into();
    let units = [unit(0, true, "1.0.0"), bad];
    match leader_step(&view(&a, &units, false)) {
        LeaderStep::Write(n) => {
            assert_eq!(n.phase, Phase::Failed);
            assert!(n.error.contains("app/2: volume not visible"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn downloading_downloads_then_grants_web_first() {
    let a = app(Phase::Downloading, 3);
    let units = [
        unit(2, false, "1.0.0"),
        unit(1, false, "1.0.0"),
        unit(5, true, "1.0.0"),
    ];
    assert_eq!(leader_step(&view(&a, &units, false)), LeaderStep::Download);
    match leader_step(&view(&a, &units, true)) {
        LeaderStep::Write(n) => {
            assert_eq!(n.phase, Phase::Complete);
            assert_eq!(n.grant, vec!["app/5"]);
        }
        other => panic!("{other:?}"),
    }
    // no web unit: workers by number, max_unavailable at a time
    let workers = [
        unit(3, false, "1.0.0"),
        unit(1, false, "1.0.0"),
        unit(2, false, "1.0.0"),
    ];
    let mut v = view(&a, &workers, true);
    v.max_unavailable = 2;
    match leader_step(&v) {
        LeaderStep::Write(n) => assert_eq!(n.grant, vec!["app/1", "app/2"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn complete_waits_for_granted_units_and_never_mixes_web_and_workers() {
    let mut a = app(Phase::Complete, 3);
    a.grant = vec!["app/0".into()];
    let units = [
        unit(0, true, "1.0.0"),
        unit(1, false, "1.0.0"),
        unit(2, false, "1.0.0"),
    ];
    let mut v = view(&a, &units, true);
    v.max_unavailable = 5;
    assert!(matches!(leader_step(&v), LeaderStep::Wait(w) if w.contains("app/0")));
    // web switched: all workers at once (max 5), never together with web
    let units = [
        unit(0, true, "2.0.0"),
        unit(1, false, "1.0.0"),
        unit(2, false, "1.0.0"),
    ];
    let mut v = view(&a, &units, true);
    v.max_unavailable = 5;
    match leader_step(&v) {
        LeaderStep::Write(n) => assert_eq!(n.grant, vec!["app/1", "app/2"]),
        other => panic!("{other:?}"),
    }
    // everyone on target: finish, idle, release updated
    let done = [unit(0, true, "2.0.0"), unit(1, false, "2.0.0")];
    match leader_step(&view(&a, &done, true)) {
        LeaderStep::Finish(n) => {
            assert_eq!((n.phase, n.release.as_str()), (Phase::Idle, "2.0.0"));
            assert!(n.grant.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn granted_unit_departing_moves_the_grant_on() {
    let mut a = app(Phase::Complete, 3);
    a.grant = vec!["app/1".into()];
    // app/1 departed: it is not among the units any more
    let units = [unit(0, true, "2.0.0"), unit(2, false, "1.0.0")];
    match leader_step(&view(&a, &units, true)) {
        LeaderStep::Write(n) => assert_eq!(n.grant, vec!["app/2"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn failure_rolls_back_then_ends_failed() {
    let mut a = app(Phase::Complete, 3);
    a.grant = vec!["app/1".into()];
    let mut bad = unit(1, false, "1.0.0");
    bad.state = Some((3, UnitState::Failed));
    bad.error = "concourse did not start".into();
    let units = [unit(0, true, "2.0.0"), bad.clone(), unit(2, false, "1.0.0")];
    let rb = match leader_step(&view(&a, &units, true)) {
        LeaderStep::Write(n) => n,
        other => panic!("{other:?}"),
    };
    assert!(rb.rollback);
    assert_eq!(
        (rb.gen, rb.target.as_str(), rb.from.as_str()),
        (4, "1.0.0", "2.0.0")
    );
    assert_eq!(
        rb.grant,
        vec!["app/0"],
        "the switched web unit goes back first"
    );
    assert!(rb.error.contains("app/1: concourse did not start"));
    // the old failure (gen 3) no longer counts in gen 4
    let units = [unit(0, true, "1.0.0"), bad, unit(2, false, "1.0.0")];
    match leader_step(&view(&rb, &units, true)) {
        LeaderStep::Finish(n) => {
            assert_eq!(n.phase, Phase::Failed);
            assert_eq!(n.release, "1.0.0");
            assert!(!n.rollback);
            assert!(n.error.contains("upgrade to v2.0.0 failed"));
        }
        other => panic!("{other:?}"),
    }
    // a failure during the rollback gives up
    let mut bad2 = unit(0, true, "2.0.0");
    bad2.state = Some((4, UnitState::Failed));
    match leader_step(&view(&rb, &[bad2], true)) {
        LeaderStep::Write(n) => {
            assert_eq!(n.phase, Phase::Failed);
            assert!(n.error.contains("rollback"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unit_steps_for_every_phase_role_and_grant() {
    for phase in [
        Phase::Idle,
        Phase::Prepare,
        Phase::Downloading,
        Phase::Complete,
        Phase::Failed,
    ] {
        for web in [false, true] {
            for granted in [false, true] {
                for acked in [false, true] {
                    for running in ["1.0.0", "2.0.0"] {
                        let mut a = app(phase, 3);
                        let mut me = unit(1, web, running);
                        if granted {
                            a.grant = vec![me.name.clone()];
                        }
                        if acked {
                            me.ack = Some((3, phase));
                        }
                        let s = unit_step(&UnitView {
                            app: &a,
                            me: &me,
                            running: Some(running),
                            volume_ok: true,
                        });
                        let expect_ack =
                            matches!(phase, Phase::Prepare | Phase::Downloading) && !acked;
                        assert_eq!(s.ack.is_some(), expect_ack, "{phase:?} acked={acked}");
                        let expect_switch =
                            phase == Phase::Complete && granted && running == "1.0.0";
                        assert_eq!(
                            s.switch_to.is_some(),
                            expect_switch,
                            "{phase:?} web={web} granted={granted} running={running}"
                        );
                        assert!(s.refuse.is_none());
                    }
                }
            }
        }
    }
}

/// A switch hook that failed after the pointer moved left the unit on the target
/// without reporting it: its retry switches again (restart and verification), from the
/// version it last reported.
#[test]
fn a_granted_unit_on_the_target_that_did_not_report_it_switches_again() {
    let mut a = app(Phase::Complete, 3);
    let me = unit(1, false, "1.0.0");
    a.grant = vec![me.name.clone()];
    let s = unit_step(&UnitView {
        app: &a,
        me: &me,
        running: Some("2.0.0"),
        volume_ok: true,
    });
    assert_eq!(s.switch_to.as_deref(), Some("2.0.0"));
    let reported = unit(1, false, "2.0.0");
    let s = unit_step(&UnitView {
        app: &a,
        me: &reported,
        running: Some("2.0.0"),
        volume_ok: true,
    });
    assert_eq!(s.switch_to, None, "switched and reported");
}

#[test]
fn unit_without_volume_refuses_prepare_once() {
    let a = app(Phase::Prepare, 3);
    let me = unit(1, false, "1.0.0");
    let s = unit_step(&UnitView {
        app: &a,
        me: &me,
        running: Some("1.0.0"),
        volume_ok: false,
    });
    assert!(s.refuse.is_some());
    let mut failed = me.clone();
    failed.state = Some((3, UnitState::Failed));
    let s = unit_step(&UnitView {
        app: &a,
        me: &failed,
        running: Some("1.0.0"),
        volume_ok: false,
    });
    assert!(s.refuse.is_none(), "already reported");
    // a unit that failed this generation does not retry the switch
    let mut a = app(Phase::Complete, 3);
    a.grant = vec![failed.name.clone()];
    let s = unit_step(&UnitView {
        app: &a,
        me: &failed,
        running: Some("1.0.0"),
        volume_ok: true,
    });
    assert!(s.switch_to.is_none());
}

#[test]
fn progress_lines() {
    let mut a = app(Phase::Complete, 3);
    let units = [
        unit(0, true, "2.0.0"),
        unit(1, false, "1.0.0"),
        unit(2, false, "2.0.0"),
        unit(3, false, "1.0.0"),
        unit(4, false, "1.0.0"),
    ];
    assert_eq!(
        progress(&a, &units),
        "Upgrading to v2.0.0: waiting for 3 of 4 workers"
    );
    a.rollback = true;
    assert!(progress(&a, &units).starts_with("Rolling back to v2.0.0"));
    assert_eq!(progress(&app(Phase::Idle, 3), &units), "");
}

/// Runs the whole protocol with units acting in a pseudo-random order, one step per
/// "hook", and checks the invariants on every committed app state.
fn run_protocol(
    n: u32,
    max: usize,
    seed: u64,
    fail_unit: Option<u32>,
) -> (AppUpgrade, Vec<Phase>, Vec<UnitReport>) {
    run_protocol_with(n, max, seed, fail_unit, None)
}

/// [`run_protocol`] where the leader names who acknowledges prepare (`ack_from`).
fn run_protocol_with(
    n: u32,
    max: usize,
    seed: u64,
    fail_unit: Option<u32>,
    ack_from: Option<Vec<String>>,
) -> (AppUpgrade, Vec<Phase>, Vec<UnitReport>) {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut units: Vec<UnitReport> = (0..n).map(|i| unit(i, i == 0, "1.0.0")).collect();
    let mut a = start(
        &AppUpgrade {
            release: "1.0.0".into(),
            ..Default::default()
        },
        "2.0.0",
        false,
    )
    .unwrap();
    a.ack_from = ack_from;
    let mut phases = vec![a.phase];
    let mut published = false;
    for _ in 0..10_000 {
        // the leader (app/0 here) or a random unit takes one step
        let who = (next() % (n as u64 + 1)) as usize;
        if who == n as usize {
            let step = leader_step(&LeaderView {
                app: &a,
                units: &units,
                target_published: published,
                max_unavailable: max,
                prepare_timed_out: false,
                grant_expired: false,
            });
            match step {
                LeaderStep::Wait(_) => {}
                LeaderStep::Download => published = true,
                LeaderStep::Write(new) | LeaderStep::Finish(new) => {
                    assert!(new.gen >= a.gen);
                    let granted: Vec<&UnitReport> = units
                        .iter()
                        .filter(|u| new.grant.contains(&u.name))
                        .collect();
                    let webs = granted.iter().filter(|u| u.web).count();
                    assert!(
                        webs == 0 || granted.len() == 1,
                        "web granted together with workers: {:?}",
                        new.grant
                    );
                    assert!(
                        granted.len() <= max.max(1),
                        "more than max_unavailable granted"
                    );
                    if granted.iter().any(|u| !u.web) {
                        assert!(
                            units.iter().filter(|u| u.web).all(|u| u.on(&new.target)),
                            "workers before web"
                        );
                    }
                    if new.phase != *phases.last().unwrap() {
                        phases.push(new.phase);
                    }
                    let finished = new.phase == Phase::Idle || new.phase == Phase::Failed;
                    a = new;
                    if finished {
                        return (a, phases, units);
                    }
                }
            }
        } else {
            let me = units[who].clone();
            let running = me.version.clone();
            let s = unit_step(&UnitView {
                app: &a,
                me: &me,
                running: running.as_deref(),
                volume_ok: true,
            });
            let u = &mut units[who];
            if let Some(ack) = s.ack {
                u.ack = Some(ack);
            }
            if let Some(to) = s.switch_to {
                if fail_unit == Some(who as u32) && to == "2.0.0" {
                    u.state = Some((a.gen, UnitState::Failed));
                    u.error = "did not start".into();
                } else {
                    u.version = Some(to);
                    u.state = Some((a.gen, UnitState::Switched));
                }
            }
        }
    }
    panic!("protocol did not finish: {a:?} {units:?}");
}

#[test]
fn whole_protocol_succeeds_for_many_shapes() {
    for n in 1..=6 {
        for max in 1..=3 {
            for seed in 1..=20u64 {
                let (a, phases, units) = run_protocol(n, max, seed * 7919, None);
                assert_eq!(a.phase, Phase::Idle);
                assert_eq!(
                    phases,
                    vec![
                        Phase::Prepare,
                        Phase::Downloading,
                        Phase::Complete,
                        Phase::Idle
                    ]
                );
                assert!(units.iter().all(|u| u.on("2.0.0")));
                assert_eq!(a.release, "2.0.0");
            }
        }
    }
}

#[test]
fn whole_protocol_rolls_back_on_failure() {
    for n in 2..=5 {
        for fail in 0..n {
            for seed in 1..=10u64 {
                let (a, _phases, units) = run_protocol(n, 1, seed * 104729, Some(fail));
                assert_eq!(a.phase, Phase::Failed, "n={n} fail={fail}");
                assert!(a.error.contains(&format!("app/{fail}")), "{}", a.error);
                assert!(
                    units.iter().all(|u| u.on("1.0.0")),
                    "all back on 1.0.0: {units:?}"
                );
                assert_eq!(a.release, "1.0.0");
            }
        }
    }
}

#[test]
fn catch_up_grants_the_stray_unit_then_finishes() {
    let idle = AppUpgrade {
        gen: 2,
        release: "2.0.0".into(),
        ..Default::default()
    };
    let c = catch_up(&idle, "1.0.0");
    assert_eq!(
        (c.phase, c.gen, c.target.as_str(), c.from.as_str()),
        (Phase::Complete, 3, "2.0.0", "1.0.0")
    );
    let units = [unit(0, true, "2.0.0"), unit(1, false, "1.0.0")];
    match leader_step(&view(&c, &units, true)) {
        LeaderStep::Write(n) => assert_eq!(n.grant, vec!["app/1"]),
        other => panic!("{other:?}"),
    }
    let done = [unit(0, true, "2.0.0"), unit(1, false, "2.0.0")];
    assert!(matches!(
        leader_step(&view(&c, &done, true)),
        LeaderStep::Finish(AppUpgrade {
            phase: Phase::Idle,
            ..
        })
    ));
}

fn failed_in(mut u: UnitReport, gen: u64, why: &str) -> UnitReport {
    u.state = Some((gen, UnitState::Failed));
    u.error = why.into();
    u
}

/// Regression (issue 11.3): a stray unit that fails to catch up made the leader "roll
/// back" every unit, web first, to the stray version.
#[test]
fn regression_catch_up_failure_does_not_roll_everybody_back_to_the_stray_version() {
    let idle = AppUpgrade {
        gen: 2,
        release: "2.0.0".into(),
        config_version: "2.0.0".into(),
        ..Default::default()
    };
    let c = catch_up(&idle, "1.0.0");
    assert!(c.is_catch_up());
    let c = AppUpgrade {
        grant: vec!["app/2".into()],
        ..c
    };
    let units = [
        unit(0, true, "2.0.0"),
        unit(1, false, "2.0.0"),
        failed_in(unit(2, false, "1.0.0"), 3, "v2.0.0 did not start on app/2"),
    ];
    match leader_step(&view(&c, &units, true)) {
        LeaderStep::Finish(done) => {
            assert_eq!(done.phase, Phase::Idle, "{done:?}");
            assert_eq!(done.release, "2.0.0", "the application keeps its release");
            assert!(!done.rollback);
            assert!(
                done.error.contains("app/2: v2.0.0 did not start"),
                "{}",
                done.error
            );
            assert!(done.grant.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn catch_up_goes_on_with_the_other_strays_when_one_fails() {
    let c = catch_up(
        &AppUpgrade {
            gen: 2,
            release: "2.0.0".into(),
            ..Default::default()
        },
        "1.0.0",
    );
    let units = [
        unit(0, true, "2.0.0"),
        failed_in(unit(1, false, "1.0.0"), 3, "x"),
        unit(2, false, "1.5.0"),
    ];
    match leader_step(&view(&c, &units, true)) {
        LeaderStep::Write(n) => assert_eq!(n.grant, vec!["app/2"], "the failed unit is skipped"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_catch_up_is_retried_only_when_asked() {
    let after = AppUpgrade {
        gen: 3,
        release: "2.0.0".into(),
        error: "app/2: x".into(),
        ..Default::default()
    };
    let units = [
        unit(0, true, "2.0.0"),
        failed_in(unit(2, false, "1.0.0"), 3, "x"),
    ];
    assert_eq!(next_catch_up(&after, &units, false), None, "no hot loop");
    let again = next_catch_up(&after, &units, true).unwrap();
    assert_eq!(
        (
            again.phase,
            again.gen,
            again.from.as_str(),
            again.error.as_str()
        ),
        (Phase::Complete, 4, "1.0.0", "")
    );
    // a unit that did not fail the last generation is caught up from any hook
    let fresh = [unit(0, true, "2.0.0"), unit(2, false, "1.0.0")];
    assert!(next_catch_up(&after, &fresh, false).is_some());
    // nothing to do: everybody on the release, or an upgrade under way
    assert_eq!(next_catch_up(&after, &[unit(0, true, "2.0.0")], true), None);
    let busy = AppUpgrade {
        phase: Phase::Prepare,
        ..after
    };
    assert_eq!(next_catch_up(&busy, &units, true), None);
}

#[test]
fn only_catch_up_generations_are_catch_ups() {
    let idle = AppUpgrade {
        gen: 1,
        release: "1.0.0".into(),
        ..Default::default()
    };
    let up = start(&idle, "2.0.0", false).unwrap();
    assert!(!up.is_catch_up());
    assert!(!AppUpgrade {
        phase: Phase::Complete,
        ..up.clone()
    }
    .is_catch_up());
    let rb = AppUpgrade {
        phase: Phase::Complete,
        target: "1.0.0".into(),
        from: "2.0.0".into(),
        rollback: true,
        ..up
    };
    assert!(
        !rb.is_catch_up(),
        "a rollback targets the release too but is not a catch-up"
    );
    assert!(!idle.is_catch_up());
}

/// Issue 11.6: a granted unit that never runs a hook (lost machine, planned unit that
/// never started) must not hold the upgrade forever.
#[test]
fn an_expired_grant_is_skipped_and_the_upgrade_goes_on() {
    let c = AppUpgrade {
        phase: Phase::Complete,
        grant: vec!["app/1".into()],
        ..app(Phase::Complete, 3)
    };
    let units = [
        unit(0, true, "2.0.0"),
        unit(1, false, "1.0.0"),
        unit(2, false, "1.0.0"),
    ];
    // before the timeout: wait
    assert!(matches!(
        leader_step(&view(&c, &units, true)),
        LeaderStep::Wait(_)
    ));
    // after it: app/1 is skipped, its grant revoked
    let expired = LeaderView {
        grant_expired: true,
        ..view(&c, &units, true)
    };
    let skipped = match leader_step(&expired) {
        LeaderStep::Write(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(skipped.skipped, vec!["app/1"]);
    assert!(skipped.grant.is_empty());
    let round = AppUpgrade::from_bag(&skipped.to_bag());
    assert_eq!(round.skipped, vec!["app/1"], "skipped survives the databag");
    // next: app/2 is granted, never app/1 again
    match leader_step(&view(&skipped, &units, true)) {
        LeaderStep::Write(a) => assert_eq!(a.grant, vec!["app/2"]),
        other => panic!("{other:?}"),
    }
    // once the others switched: finished on the target, the skipped unit named
    let done_units = [
        unit(0, true, "2.0.0"),
        unit(1, false, "1.0.0"),
        unit(2, false, "2.0.0"),
    ];
    let done = match leader_step(&view(&skipped, &done_units, true)) {
        LeaderStep::Finish(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!((done.phase, done.release.as_str()), (Phase::Idle, "2.0.0"));
    assert!(
        done.error.contains("app/1 did not switch"),
        "{}",
        done.error
    );
    // it catches up when update-status asks (never from any hook: no hot loop)
    assert_eq!(next_catch_up(&done, &done_units, false), None);
    let c2 = next_catch_up(&done, &done_units, true).unwrap();
    assert!(c2.is_catch_up());
    assert!(c2.skipped.is_empty(), "a new generation skips nobody");
    assert_eq!(
        AppUpgrade::from_bag(&c2.to_bag()).skipped,
        Vec::<String>::new()
    );
}

#[test]
fn skipped_lists_of_another_generation_read_as_empty() {
    let mut bag = app(Phase::Complete, 5).to_bag();
    bag.insert(K_SKIPPED.into(), "4:app/1".into());
    assert!(AppUpgrade::from_bag(&bag).skipped.is_empty());
    bag.insert(K_SKIPPED.into(), "5:app/1, app/2".into());
    assert_eq!(AppUpgrade::from_bag(&bag).skipped, vec!["app/1", "app/2"]);
}

/// Issue 13: with the leader naming who acknowledges prepare (the waker, app/1, and
/// nobody else), the protocol keeps every invariant `run_protocol` checks, succeeds and
/// rolls back the same, and only the named unit ever acknowledges prepare.
#[test]
fn whole_protocol_with_named_ackers() {
    for n in 1..=6u32 {
        let ackers: Vec<String> = (1..n.min(2)).map(|i| format!("app/{i}")).collect();
        for max in 1..=3 {
            for seed in 1..=20u64 {
                let (a, phases, units) =
                    run_protocol_with(n, max, seed * 7919, None, Some(ackers.clone()));
                assert_eq!(a.phase, Phase::Idle);
                assert_eq!(phases.first(), Some(&Phase::Prepare));
                assert!(units.iter().all(|u| u.on("2.0.0")));
                for u in units.iter().filter(|u| !ackers.contains(&u.name)) {
                    assert_ne!(u.ack, Some((1, Phase::Prepare)), "{} acked", u.name);
                }
            }
        }
        for fail in 0..n {
            let (a, _, units) = run_protocol_with(n, 1, 104729, Some(fail), Some(ackers.clone()));
            assert_eq!(a.phase, Phase::Failed, "n={n} fail={fail}");
            assert!(units.iter().all(|u| u.on("1.0.0")), "{units:?}");
        }
    }
}

#[test]
fn prepare_waits_only_for_the_named_units() {
    let mut a = app(Phase::Prepare, 3);
    a.ack_from = Some(vec!["app/2".into()]);
    let mut units = vec![
        unit(0, true, "1.0.0"),
        unit(1, false, "1.0.0"),
        unit(2, false, "1.0.0"),
    ];
    match leader_step(&view(&a, &units, false)) {
        LeaderStep::Wait(why) => assert!(why.contains("app/2") && !why.contains("app/1"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        progress(&a, &units),
        "Upgrading to v2.0.0: waiting for 1 of 3 units to prepare"
    );
    units[2].ack = Some((3, Phase::Prepare));
    assert!(matches!(
        leader_step(&view(&a, &units, false)),
        LeaderStep::Write(n) if n.phase == Phase::Downloading
    ));
    // a unit not named does not acknowledge prepare, but does acknowledge downloading
    let step = |a: &AppUpgrade, me: &UnitReport| {
        unit_step(&UnitView {
            app: a,
            me,
            running: Some("1.0.0"),
            volume_ok: true,
        })
    };
    assert_eq!(step(&a, &units[1]).ack, None);
    assert_eq!(
        step(&a, &unit(2, false, "1.0.0")).ack,
        Some((3, Phase::Prepare))
    );
    let d = AppUpgrade {
        phase: Phase::Downloading,
        ..a.clone()
    };
    assert_eq!(step(&d, &units[1]).ack, Some((3, Phase::Downloading)));
    // a new generation asks everybody again until the leader names its units
    let failed = AppUpgrade {
        phase: Phase::Failed,
        ..a.clone()
    };
    assert_eq!(retry_failed(&failed).unwrap().ack_from, None);
}
