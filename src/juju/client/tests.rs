//! Exact argv and output parsing of every typed call, against outputs recorded from
//! Juju 3.x hook tools, and the per-hook cache.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::*;
use crate::juju::context::Context;
use crate::juju::tools::{classify, format_argv};

/// One recorded call: argv and stdin.
type Call = (String, Option<String>);
/// A canned answer: stdout, or (exit code, stderr).
type Answer = std::result::Result<String, (i32, String)>;

/// A fake runner answering from fixtures keyed by full argv; records every call.
#[derive(Clone, Default)]
struct Fake {
    answers: Rc<RefCell<HashMap<String, Answer>>>,
    calls: Rc<RefCell<Vec<Call>>>,
}

impl Fake {
    fn ok(&self, argv: &str, out: &str) -> &Self {
        self.answers
            .borrow_mut()
            .insert(argv.into(), Ok(out.into()));
        self
    }
    fn err(&self, argv: &str, code: i32, stderr: &str) -> &Self {
        self.answers
            .borrow_mut()
            .insert(argv.into(), Err((code, stderr.into())));
        self
    }
    fn argvs(&self) -> Vec<String> {
        self.calls.borrow().iter().map(|c| c.0.clone()).collect()
    }
}

impl ToolRunner for Fake {
    fn run(
        &self,
        tool: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> std::result::Result<Vec<u8>, ToolError> {
        let argv = format_argv(tool, args);
        self.calls.borrow_mut().push((
            argv.clone(),
            stdin.map(|b| String::from_utf8_lossy(b).into_owned()),
        ));
        // Wildcard answers: a fixture registered as "<tool> *" answers any argv of that tool.
        let answers = self.answers.borrow();
        let answer = answers
            .get(&argv)
            .or_else(|| answers.get(&format!("{tool} *")))
            .cloned()
            .unwrap_or(Ok(String::new()));
        match answer {
            Ok(out) => Ok(out.into_bytes()),
            Err((code, stderr)) => Err(ToolError::Failed {
                argv,
                code,
                kind: classify(code, &stderr),
                stderr,
            }),
        }
    }
}

fn juju(fake: &Fake) -> Juju {
    let vars: HashMap<String, String> = [
        ("JUJU_DISPATCH_PATH", "hooks/update-status"),
        ("JUJU_UNIT_NAME", "concourse-ci/1"),
        ("JUJU_CHARM_DIR", "/charm"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Juju::new(Context::from_vars(&vars).unwrap(), Box::new(fake.clone()))
}

fn peers() -> RelationRef {
    RelationRef {
        endpoint: "peers".into(),
        id: 0,
    }
}

#[test]
fn config_get_argv_parse_and_cache() {
    let f = Fake::default();
    f.ok(
        "config-get --format=json",
        r#"{"mode":"auto","web-port":8080,"version":"","debug":false}"#,
    );
    let j = juju(&f);
    let c = j.config().unwrap();
    assert_eq!(c["web-port"], 8080);
    assert_eq!(c["mode"], "auto");
    j.config().unwrap();
    assert_eq!(f.argvs(), vec!["config-get --format=json"]);
}

#[test]
fn is_leader_cached() {
    let f = Fake::default();
    f.ok("is-leader --format=json", "true\n");
    let j = juju(&f);
    assert!(j.is_leader().unwrap());
    assert!(j.is_leader().unwrap());
    assert_eq!(f.argvs(), vec!["is-leader --format=json"]);
}

#[test]
fn relation_ids_list_get() {
    let f = Fake::default();
    f.ok("relation-ids --format=json peers", r#"["peers:0"]"#)
        .ok("relation-ids --format=json tsa", "[]")
        .ok("relation-list --format=json -r peers:0", r#"["concourse-ci/0","concourse-ci/2"]"#)
        .ok(
            "relation-get --format=json -r peers:0 - concourse-ci/0",
            r#"{"egress-subnets":"10.0.0.4/32","ingress-address":"10.0.0.4","private-address":"10.0.0.4","version":"7.14.3"}"#,
        )
        .ok("relation-get --format=json -r peers:0 --app - concourse-ci", "{}");
    let j = juju(&f);
    assert_eq!(j.relation_ids("peers").unwrap(), vec![peers()]);
    assert!(j.relation_ids("tsa").unwrap().is_empty());
    assert_eq!(j.relation_list(&peers()).unwrap().len(), 2);
    let bag = j
        .relation_get(&peers(), &Bag::Unit("concourse-ci/0".into()))
        .unwrap();
    assert_eq!(bag["version"], "7.14.3");
    assert!(j.own_app_bag(&peers()).unwrap().is_empty());
    // all cached
    j.relation_ids("peers").unwrap();
    j.relation_list(&peers()).unwrap();
    j.relation_get(&peers(), &Bag::Unit("concourse-ci/0".into()))
        .unwrap();
    j.own_app_bag(&peers()).unwrap();
    assert_eq!(f.argvs().len(), 5, "{:?}", f.argvs());
}

#[test]
fn relation_remote_app_argv_and_cache() {
    let f = Fake::default();
    f.ok(
        "relation-list --format=json -r postgresql:3 --app",
        "\"postgresql\"\n",
    );
    let j = juju(&f);
    let rel = RelationRef {
        endpoint: "postgresql".into(),
        id: 3,
    };
    assert_eq!(
        j.relation_remote_app(&rel).unwrap().as_deref(),
        Some("postgresql")
    );
    j.relation_remote_app(&rel).unwrap();
    assert_eq!(f.argvs().len(), 1);
}

#[test]
fn relation_ids_rejects_malformed_ids() {
    let f = Fake::default();
    f.ok("relation-ids --format=json peers", r#"["peers"]"#);
    let err = juju(&f).relation_ids("peers").unwrap_err();
    assert!(matches!(err, ToolError::BadOutput { .. }), "{err}");
}

#[test]
fn relation_set_sends_only_changes_on_stdin_and_updates_cache() {
    let f = Fake::default();
    f.ok(
        "relation-get --format=json -r peers:0 - concourse-ci/1",
        r#"{"private-address":"10.0.0.5","version":"1"}"#,
    );
    let j = juju(&f);
    let mut d = Databag::new();
    d.insert("version".into(), "1".into());
    j.relation_set(&peers(), false, &d).unwrap();
    assert_eq!(f.argvs().len(), 1, "no-op write must not call relation-set");

    d.insert("version".into(), "2".into());
    d.insert("nonce".into(), "abc".into());
    j.relation_set(&peers(), false, &d).unwrap();
    let calls = f.calls.borrow().clone();
    assert_eq!(calls[1].0, "relation-set -r peers:0 --file -");
    let sent: Databag = serde_json::from_str(calls[1].1.as_deref().unwrap()).unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent["version"], "2");

    // own writes visible, deletion by empty value
    let mut del = Databag::new();
    del.insert("nonce".into(), String::new());
    j.relation_set(&peers(), false, &del).unwrap();
    let bag = j.own_unit_bag(&peers()).unwrap();
    assert_eq!(bag.get("nonce"), None);
    assert_eq!(bag["version"], "2");
    assert_eq!(f.argvs().len(), 3);
}

#[test]
fn relation_set_app_uses_app_flag_and_maps_not_leader() {
    let f = Fake::default();
    f.ok(
        "relation-get --format=json -r peers:0 --app - concourse-ci",
        "{}",
    )
    .err(
        "relation-set -r peers:0 --app --file -",
        1,
        "ERROR cannot write relation settings",
    );
    let j = juju(&f);
    let mut d = Databag::new();
    d.insert("upgrade-phase".into(), "prepare".into());
    let err = j.relation_set(&peers(), true, &d).unwrap_err();
    assert!(err.is(FailureKind::NotLeader), "{err}");
    assert!(err
        .to_string()
        .contains("relation-set -r peers:0 --app --file -"));
}

#[test]
fn relation_not_found_maps() {
    let f = Fake::default();
    f.err(
        "relation-list --format=json -r peers:9",
        2,
        r#"ERROR invalid value "peers:9" for option -r: relation not found"#,
    );
    let rel = RelationRef {
        endpoint: "peers".into(),
        id: 9,
    };
    let err = juju(&f).relation_list(&rel).unwrap_err();
    assert!(err.is(FailureKind::RelationNotFound));
    match err {
        ToolError::Failed { code, stderr, .. } => {
            assert_eq!(code, 2);
            assert!(stderr.contains("peers:9"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn relation_get_permission_denied() {
    let f = Fake::default();
    f.err("relation-get *", 1, "ERROR permission denied");
    let rel = RelationRef {
        endpoint: "postgresql".into(),
        id: 3,
    };
    let err = juju(&f).own_app_bag(&rel).unwrap_err();
    assert!(err.is(FailureKind::PermissionDenied));
}

#[test]
fn status_set_argv() {
    let f = Fake::default();
    let j = juju(&f);
    j.status_set(&Status::active("Worker ready (v7.14.3)"), false)
        .unwrap();
    j.status_set(&Status::blocked("-starts with dash"), true)
        .unwrap();
    j.status_set(&Status::maintenance(""), false).unwrap();
    assert_eq!(
        f.argvs(),
        vec![
            "status-set --application=False active -- Worker ready (v7.14.3)",
            "status-set --application=True blocked -- -starts with dash",
            "status-set --application=False maintenance",
        ]
    );
}

#[test]
fn logging_version_and_action_tools() {
    let f = Fake::default();
    f.ok("action-get --format=json", r#"{"version":"7.14.3"}"#);
    let j = juju(&f);
    j.application_version_set("7.14.3").unwrap();
    assert_eq!(j.action_params().unwrap()["version"], "7.14.3");
    j.action_params().unwrap();
    let mut r = BTreeMap::new();
    r.insert("generation".to_string(), "3".to_string());
    r.insert(
        "follow.command".to_string(),
        "juju status --watch 5s".to_string(),
    );
    j.action_set(&r).unwrap();
    j.action_set(&BTreeMap::new()).unwrap();
    j.action_log("Prepared upgrade").unwrap();
    j.action_fail("run this on the leader").unwrap();
    assert_eq!(
        f.argvs(),
        vec![
            "application-version-set -- 7.14.3",
            "action-get --format=json",
            "action-set follow.command=juju status --watch 5s generation=3",
            "action-log -- Prepared upgrade",
            "action-fail -- run this on the leader",
        ]
    );
}

#[test]
fn action_tools_outside_action() {
    let f = Fake::default();
    f.err("action-get --format=json", 1, "ERROR not running an action");
    assert!(juju(&f)
        .action_params()
        .unwrap_err()
        .is(FailureKind::NotRunningAction));
}

#[test]
fn storage_tools() {
    let f = Fake::default();
    f.ok(
        "storage-list --format=json concourse-data",
        r#"["concourse-data/0"]"#,
    )
    .ok(
        "storage-get --format=json -s concourse-data/0",
        r#"{"kind":"filesystem","location":"/var/lib/concourse"}"#,
    );
    let j = juju(&f);
    assert_eq!(
        j.storage_list("concourse-data").unwrap(),
        vec!["concourse-data/0"]
    );
    let info = j.storage_get("concourse-data/0").unwrap();
    assert_eq!(info.location, PathBuf::from("/var/lib/concourse"));
    assert_eq!(info.kind, "filesystem");
    j.storage_get("concourse-data/0").unwrap();
    j.storage_list("concourse-data").unwrap();
    assert_eq!(f.argvs().len(), 2);
}

#[test]
fn resource_get_trims_and_treats_refusal_and_empty_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("concourse.tgz");
    std::fs::write(&file, b"data").unwrap();
    let empty = dir.path().join("empty.tgz");
    std::fs::write(&empty, b"").unwrap();
    let f = Fake::default();
    f.ok(
        "resource-get concourse-release",
        &format!("{}\n", file.display()),
    )
    .ok("resource-get empty", &format!("{}\n", empty.display()))
    .err(
        "resource-get missing",
        1,
        "ERROR could not download resource: not found",
    );
    let j = juju(&f);
    assert_eq!(j.resource_get("concourse-release").unwrap(), Some(file));
    assert_eq!(j.resource_get("empty").unwrap(), None);
    assert_eq!(j.resource_get("missing").unwrap(), None);
    j.resource_get("missing").unwrap();
    assert_eq!(f.argvs().len(), 3);
}

#[test]
fn network_and_ports() {
    let f = Fake::default();
    f.ok(
        "network-get --format=json peers",
        r#"{"bind-addresses":[{"mac-address":"00:16:3e:aa","interface-name":"eth0","addresses":[{"hostname":"","value":"10.0.0.5","cidr":"10.0.0.0/24"}]}],"egress-subnets":["10.0.0.5/32"],"ingress-addresses":["10.0.0.5"]}"#,
    )
    .ok(
        "opened-ports --endpoints --format=json",
        r#"["8080/tcp (*)", "9391/tcp (cos-agent, monitoring)"]"#,
    );
    let j = juju(&f);
    let n = j.network_get("peers").unwrap();
    assert_eq!(n.primary_address(), Some("10.0.0.5"));
    assert_eq!(n.bind_addresses[0].addresses[0].cidr, "10.0.0.0/24");
    j.network_get("peers").unwrap();
    let opened = j.opened_ports().unwrap();
    assert_eq!(opened[0].tcp_port(), Some(8080));
    assert!(opened[0].endpoints.is_empty());
    assert_eq!(opened[1].endpoints, ["cos-agent", "monitoring"]);
    j.open_port(9090, "tcp", &[]).unwrap();
    j.close_port(8080, "tcp", &[]).unwrap();
    j.open_port(9391, "tcp", &["monitoring", "cos-agent"])
        .unwrap();
    assert_eq!(
        f.argvs(),
        vec![
            "network-get --format=json peers",
            "opened-ports --endpoints --format=json",
            "open-port 9090/tcp",
            "close-port 8080/tcp",
            "open-port 9391/tcp --endpoints monitoring,cos-agent"
        ]
    );
}

#[test]
fn network_get_unknown_binding() {
    let f = Fake::default();
    f.err(
        "network-get --format=json nope",
        1,
        r#"ERROR no network config found for binding "nope""#,
    );
    assert!(juju(&f)
        .network_get("nope")
        .unwrap_err()
        .is(FailureKind::Refused));
}

#[test]
fn goal_state_parse_and_planned_units() {
    let f = Fake::default();
    f.ok(
        "goal-state --format=json",
        r#"{"units":{"concourse-ci/0":{"status":"active","since":"2026-11-28 10:00:00Z"},"concourse-ci/1":{"status":"dying","since":"x"}},"relations":{"peers":{"concourse-ci/0":{"status":"joined","since":"x"}}}}"#,
    );
    let j = juju(&f);
    let g = j.goal_state().unwrap();
    assert_eq!(g.planned_units(), vec!["concourse-ci/0"]);
    assert_eq!(g.relations["peers"]["concourse-ci/0"].status, "joined");
    j.goal_state().unwrap();
    assert_eq!(f.argvs().len(), 1);
}

#[test]
fn secrets_keep_values_out_of_argv() {
    let f = Fake::default();
    f.ok("secret-add *", "secret:cs0a1b2c3d4e5f\n")
        .ok("secret-get --format=json --label admin-password", r#"{"password":"hunter2"}"#)
        .ok(
            "secret-info-get --format=json --label admin-password",
            r#"{"cs0a1b2c3d4e5f":{"revision":2,"label":"admin-password","owner":"application","rotation":"never"}}"#,
        )
        .err("secret-info-get --format=json --label nope", 1, r#"ERROR secret "nope" not found"#);
    let j = juju(&f);
    let mut content = BTreeMap::new();
    content.insert("password".to_string(), "s3cr3t-value".to_string());
    // secret-add reads the value files while it runs: check them from inside the fake
    let uri = j
        .secret_add(
            &content,
            Some("admin-password"),
            SecretOwner::Application,
            Some("admin"),
        )
        .unwrap();
    assert_eq!(uri, "secret:cs0a1b2c3d4e5f");
    let add = f.argvs()[0].clone();
    assert!(add.starts_with("secret-add --label admin-password --description admin --owner application password#file=/"), "{add}");
    assert!(!add.contains("s3cr3t-value"));
    // the cache answers our own secret without a secret-get call
    assert_eq!(
        j.secret_get(&SecretRef::Id(uri.clone()), false).unwrap()["password"],
        "s3cr3t-value"
    );
    assert_eq!(f.argvs().len(), 1);
    let got = j
        .secret_get(&SecretRef::Label("admin-password".into()), false)
        .unwrap();
    assert_eq!(got["password"], "s3cr3t-value", "label cached at add");
    let (id, info) = j
        .secret_info(&SecretRef::Label("admin-password".into()))
        .unwrap()
        .unwrap();
    assert_eq!(id, "cs0a1b2c3d4e5f");
    assert_eq!(info.revision, 2);
    assert!(j
        .secret_info(&SecretRef::Label("nope".into()))
        .unwrap()
        .is_none());
    // --refresh is another question (the latest revision): asked, then cached
    let f2 = Fake::default();
    f2.ok(
        "secret-get --format=json secret:pg --refresh",
        r#"{"password":"rotated"}"#,
    );
    let j2 = juju(&f2);
    for _ in 0..2 {
        let got = j2
            .secret_get(&SecretRef::Id("secret:pg".into()), true)
            .unwrap();
        assert_eq!(got["password"], "rotated");
    }
    assert_eq!(f2.argvs().len(), 1);
    let argvs = f.argvs();
    assert!(argvs.iter().all(|a| !a.contains("s3cr3t-value")));
}

#[test]
fn secret_value_files_are_private_and_removed() {
    // A runner that inspects the value file while the tool "runs".
    struct Inspect(Rc<RefCell<Option<(u32, String)>>>);
    impl ToolRunner for Inspect {
        fn run(
            &self,
            _t: &str,
            args: &[String],
            _s: Option<&[u8]>,
        ) -> std::result::Result<Vec<u8>, ToolError> {
            use std::os::unix::fs::PermissionsExt;
            let path = args
                .iter()
                .find_map(|a| a.split_once("#file="))
                .unwrap()
                .1
                .to_string();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            *self.0.borrow_mut() = Some((mode, path));
            Ok(b"secret:x\n".to_vec())
        }
    }
    let seen = Rc::new(RefCell::new(None));
    let vars: HashMap<String, String> = [
        ("JUJU_DISPATCH_PATH", "hooks/install"),
        ("JUJU_UNIT_NAME", "a/0"),
        ("JUJU_CHARM_DIR", "/c"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let j = Juju::new(
        Context::from_vars(&vars).unwrap(),
        Box::new(Inspect(seen.clone())),
    );
    let mut content = BTreeMap::new();
    content.insert("password".to_string(), "x".to_string());
    j.secret_add(&content, None, SecretOwner::Unit, None)
        .unwrap();
    let (mode, path) = seen.borrow().clone().unwrap();
    assert_eq!(mode, 0o600);
    assert!(
        !std::path::Path::new(&path).exists(),
        "value file must be removed"
    );
}

#[test]
fn bad_json_is_an_error_naming_the_tool() {
    let f = Fake::default();
    f.ok("config-get --format=json", "mode: auto\n");
    let err = juju(&f).config().unwrap_err();
    assert!(matches!(err, ToolError::BadOutput { .. }));
    assert!(err.to_string().contains("config-get --format=json"));
}

#[test]
fn opened_ports_without_endpoints_is_bad_output() {
    let f = Fake::default();
    f.ok("opened-ports --endpoints --format=json", r#"["8080/tcp"]"#);
    let err = juju(&f).opened_ports().unwrap_err();
    assert!(matches!(err, ToolError::BadOutput { .. }), "{err}");
}
