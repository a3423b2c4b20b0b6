//! The `CONCOURSE_*` variables Concourse defines, for the escape hatch (`extra-web-env`,
//! `extra-worker-env`) and the fake `concourse` of the tests.
//!
//! Owns: `data/concourse-env-vars.tsv`, the variables of `concourse web` and `concourse
//! worker` per release, taken from Concourse's sources (the file's header names them).
//! Invariants: a variable is known when any supported release defines it for that
//! command; choices are checked as 7.14.3 defines them. Hazards: Concourse itself ignores
//! an unknown variable silently, so this table is the only thing between a typo and a
//! setting that does nothing.

/// The table, embedded.
pub const TABLE: &str = include_str!("../data/concourse-env-vars.tsv");

/// One variable of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var<'a> {
    pub command: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub choices: Vec<&'a str>,
    pub tags: Vec<&'a str>,
}

/// Every row of the table.
pub fn all() -> impl Iterator<Item = Var<'static>> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (command, name, kind) = (f.next()?, f.next()?, f.next()?);
            let choices = f.next().unwrap_or("");
            let tags = f.next().unwrap_or("");
            let split = |s: &'static str, sep| {
                s.split(sep)
                    .filter(|x: &&str| !x.is_empty())
                    .collect::<Vec<_>>()
            };
            Some(Var {
                command,
                name,
                kind,
                choices: split(choices, '|'),
                tags: split(tags, ','),
            })
        })
}

/// The definition of `name` for `command` (`web` or `worker`).
pub fn find(command: &str, name: &str) -> Option<Var<'static>> {
    all().find(|v| v.command == command && v.name == name)
}

/// Why `value` is not valid for `var`, if it is not (choices, booleans, numbers).
pub fn check_value(var: &Var, value: &str) -> Option<String> {
    let bad = |what: &str| Some(format!("{} expects {what}, not {value:?}", var.name));
    match var.kind {
        "bool" if !matches!(value, "true" | "false" | "1" | "0" | "t" | "f") => {
            bad("true or false")
        }
        "int" if value.parse::<i64>().is_err() => bad("a whole number"),
        "uint" if value.parse::<u64>().is_err() => bad("a whole number"),
        "duration" if !is_go_duration(value) => bad("a duration such as 90s or 1h30m"),
        "choice" if !var.choices.contains(&value) => bad(&var.choices.join("|")),
        "choice-list" if value.split(',').any(|v| !var.choices.contains(&v.trim())) => {
            bad(&format!("a comma list of {}", var.choices.join("|")))
        }
        _ => None,
    }
}

/// A Go `time.ParseDuration` value with the units people use (`ns` to `h`).
pub fn is_go_duration(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_knows_web_and_worker_variables() {
        let v = find("web", "CONCOURSE_CONTAINER_PLACEMENT_STRATEGY").unwrap();
        assert!(v.choices.contains(&"fewest-build-containers"));
        assert!(find("worker", "CONCOURSE_BAGGAGECLAIM_DRIVER").is_some());
        assert!(find("web", "CONCOURSE_BAGGAGECLAIM_DRIVER").is_none());
        assert!(find("web", "CONCOURSE_ENABLE_ACROSS_STEP").is_some());
        assert!(find("web", "CONCOURSE_ENABLE_ACROSS_STEPS").is_none());
        // 8.2 only
        let gitea = find("web", "CONCOURSE_GITEA_CLIENT_ID").unwrap();
        assert_eq!(gitea.tags, ["8.2.5"]);
        assert!(all().count() > 400);
    }

    #[test]
    fn values_are_checked_by_type() {
        let v = find("web", "CONCOURSE_LOG_LEVEL").unwrap();
        assert!(check_value(&v, "debug").is_none());
        assert!(check_value(&v, "warn").is_some());
        let d = find("web", "CONCOURSE_GC_FAILED_GRACE_PERIOD").unwrap();
        assert!(check_value(&d, "1h30m").is_none());
        assert!(check_value(&d, "90").is_some());
        let b = find("web", "CONCOURSE_ENABLE_ACROSS_STEP").unwrap();
        assert!(check_value(&b, "yes").is_some());
        assert!(is_go_duration("1.5h") && !is_go_duration("h") && !is_go_duration(""));
    }
}
