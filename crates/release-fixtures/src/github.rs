//! The fake GitHub "latest release" API served by [`crate::server::ReleaseServer`].
//!
//! Owns: the JSON bodies of `GET /repos/concourse/concourse/releases/latest` (found and
//! rate-limited) and the version ordering used to pick "latest" among registered releases.
//! The server itself (routing, faults, the request log with the `Authorization` header each
//! request carried) lives in `release.rs`.
//!
//! Invariants: answers have the fields the charm reads (GitHub REST API, "Get the latest
//! release": docs.github.com/rest/releases/releases#get-the-latest-release): `tag_name` = `v<version>`, `assets[]` with `name`, `size`, `browser_download_url`
//! pointing at the local server; `draft`/`prerelease` are false. Hazards: none of GitHub's
//! pagination, ETags or conditional requests are modelled.

use std::cmp::Ordering;

use serde_json::json;

use crate::tarball::{tarball_file_name, Tarball};

/// Path of the endpoint (what `release-api-url` points at, after the server's base URL).
pub const LATEST_PATH: &str = "/repos/concourse/concourse/releases/latest";

/// Orders versions: numeric components compare numerically (`8.2.10` > `8.2.9`), a
/// pre-release suffix sorts before the plain version (`8.0.0-rc.1` < `8.0.0`), a leading `v`
/// is ignored, and anything unparsable compares as text. Never panics.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (Vec<u64>, Option<&str>, bool) {
        let v = v.strip_prefix('v').unwrap_or(v);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        let mut ok = true;
        let nums = core
            .split('.')
            .map(|p| {
                p.parse::<u64>().unwrap_or_else(|_| {
                    ok = false;
                    0
                })
            })
            .collect();
        (nums, pre, ok)
    }
    let (na, pa, oka) = split(a);
    let (nb, pb, okb) = split(b);
    if !(oka && okb) {
        return a.cmp(b);
    }
    let len = na.len().max(nb.len());
    for i in 0..len {
        let x = na.get(i).copied().unwrap_or(0);
        let y = nb.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (pa, pb) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

/// The JSON GitHub returns for the latest release `version`. `tarball` gives asset sizes
/// and the sha256 `digest` when the version is registered; `base_url` is
/// `http://127.0.0.1:<port>`.
pub fn latest_release_json(version: &str, tarball: Option<&Tarball>, base_url: &str) -> String {
    let file = tarball_file_name(version);
    let size = tarball.map_or(0, |t| t.size);
    let sha1_len = tarball.map_or(0, |t| t.sha1_file_content().len() as u64);
    let mut tgz = json!({
        "url": format!("{base_url}/repos/concourse/concourse/releases/assets/1"),
        "id": 1,
        "name": file,
        "label": "",
        "content_type": "application/gzip",
        "state": "uploaded",
        "size": size,
        "download_count": 0,
        "browser_download_url": format!("{base_url}/v{version}/{file}"),
    });
    if let Some(t) = tarball {
        tgz["digest"] = json!(format!("sha256:{}", t.sha256_hex));
    }
    let body = json!({
        "url": format!("{base_url}/repos/concourse/concourse/releases/1"),
        "html_url": format!("{base_url}/concourse/concourse/releases/tag/v{version}"),
        "id": 1,
        "tag_name": format!("v{version}"),
        "target_commitish": "master",
        "name": format!("v{version}"),
        "draft": false,
        "prerelease": false,
        "created_at": "2026-01-01T00:00:00Z",
        "published_at": "2026-01-01T00:00:00Z",
        "assets": [
            tgz,
            {
                "url": format!("{base_url}/repos/concourse/concourse/releases/assets/2"),
                "id": 2,
                "name": format!("{file}.sha1"),
                "label": "",
                "content_type": "text/plain",
                "state": "uploaded",
                "size": sha1_len,
                "download_count": 0,
                "browser_download_url": format!("{base_url}/v{version}/{file}.sha1"),
            }
        ],
        "body": "Fake release served by juju-sim.",
    });
    body.to_string()
}

/// GitHub's 404 body.
pub fn not_found_json() -> String {
    json!({
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest/releases/releases#get-the-latest-release",
        "status": "404",
    })
    .to_string()
}

/// GitHub's unauthenticated rate-limit body (sent with status 403).
pub fn rate_limited_json() -> String {
    json!({
        "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: \
                    Authenticated requests get a higher rate limit. Check out the \
                    documentation for more details.)",
        "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        assert_eq!(compare_versions("7.14.3", "8.0.0"), Ordering::Less);
        assert_eq!(compare_versions("8.2.10", "8.2.9"), Ordering::Greater);
        assert_eq!(compare_versions("v8.0.0", "8.0"), Ordering::Equal);
        assert_eq!(compare_versions("8.0.0-rc.1", "8.0.0"), Ordering::Less);
        assert_eq!(compare_versions("abc", "abd"), Ordering::Less);
    }

    #[test]
    fn latest_json_has_the_fields_the_charm_reads() {
        let v: serde_json::Value =
            serde_json::from_str(&latest_release_json("8.2.5", None, "http://h:1")).unwrap();
        assert_eq!(v["tag_name"], "v8.2.5");
        assert_eq!(v["assets"][0]["name"], "concourse-8.2.5-linux-amd64.tgz");
        assert_eq!(
            v["assets"][0]["browser_download_url"],
            "http://h:1/v8.2.5/concourse-8.2.5-linux-amd64.tgz"
        );
    }
}
