//! "Latest release" lookup (GitHub releases API) and the decisions around it: cache for
//! an hour, never downgrade.
//!
//! Owns: the request (`Accept`, API version, `Authorization: Bearer` only with a token),
//! parsing `tag_name`, version ordering, and [`resolve_latest`], the pure decision the
//! charm runs with its cached value from unit state.
//! Invariants: the token is sent only when set, never logged and never part of an
//! error; a found version older than the running one is never chosen; a cached value is
//! used only while fresh by this unit's own clock (a cache from the future is stale).
//! Hazards: unauthenticated GitHub allows 60 requests per hour per IP: look up on
//! install / config-changed / an action, not on every update-status.

use std::cmp::Ordering;
use std::io::Read;
use std::time::Duration;

use reqwest::header::ACCEPT;

use super::download::{build_client, error_chain, redact_url, HttpOptions};
use super::InstallError;
use crate::config::Secret;
use crate::storage_coordinator::CachedLatest;

/// How long a looked-up "latest" stays fresh.
pub const LATEST_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Asks the releases API for the latest release and returns its version (`tag_name`
/// without the leading `v`).
pub fn latest_version(
    api_url: &str,
    token: &Secret,
    http: &HttpOptions,
) -> Result<String, InstallError> {
    let shown = redact_url(api_url);
    let client = build_client(http)?;
    let mut req = client
        .get(api_url)
        .header(ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28");
    if !token.is_empty() {
        req = req.bearer_auth(token.expose());
    }
    let err = |detail: String, class_permanent: bool| InstallError::Latest {
        url: shown.clone(),
        detail,
        permanent: class_permanent,
    };
    let resp = req.send().map_err(|e| err(error_chain(e), false))?;
    let status = resp.status().as_u16();
    let rate_limited = resp
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    match status {
        200 => {}
        401 => return Err(err("HTTP 401: the GitHub token was rejected; fix or clear github-token-secret (or github-token)".into(), true)),
        403 | 429 if rate_limited || status == 429 => {
            return Err(err(
                format!(
                    "HTTP {status}: GitHub API rate limit reached; set github-token-secret, pin version, or wait"
                ),
                false,
            ))
        }
        403 => return Err(err("HTTP 403: access denied; check github-token-secret".into(), true)),
        404 => return Err(err("HTTP 404: no such releases endpoint; check release-api-url".into(), true)),
        s => {
            return Err(err(
                format!("HTTP {s}"),
                !super::download::status_is_transient(s),
            ))
        }
    }
    let mut body = Vec::new();
    resp.take(4 << 20)
        .read_to_end(&mut body)
        .map_err(|e| err(format!("reading the response: {e}"), false))?;
    parse_latest(&body).map_err(|d| err(d, true))
}

/// Extracts the version from a releases API response body.
pub fn parse_latest(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON ({e})"))?;
    let tag = v
        .get("tag_name")
        .and_then(|t| t.as_str())
        .ok_or("the response has no tag_name")?;
    let version = tag.strip_prefix('v').unwrap_or(tag);
    if crate::config::is_valid_version(version) {
        Ok(version.to_string())
    } else {
        Err(format!(
            "tag_name {:?} is not a version",
            tag.chars().take(64).collect::<String>()
        ))
    }
}

/// Orders two versions by semver precedence (`8.0.0-rc.1 < 8.0.0 < 8.0.1 < 10.0.0`);
/// `None` if either is not a version ([`crate::config::parse_version`]).
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let a = crate::config::parse_version(a)?;
    let b = crate::config::parse_version(b)?;
    Some(a.cmp(&b))
}

/// The version to target when the upstream latest is `found` and the unit runs
/// `running`: never lower than what runs.
pub fn never_downgrade(found: &str, running: Option<&str>) -> String {
    match running {
        Some(r) if compare_versions(found, r) == Some(Ordering::Less) => r.to_string(),
        _ => found.to_string(),
    }
}

/// Whether `cache` is still fresh at `now` (unix seconds).
pub fn cache_is_fresh(cache: &CachedLatest, now: u64, ttl: Duration) -> bool {
    cache.checked_at <= now && now - cache.checked_at < ttl.as_secs()
}

/// The outcome of [`resolve_latest`].
#[derive(Debug)]
pub struct ResolvedLatest {
    /// The version to target.
    pub version: String,
    /// The cache to store in unit state (unchanged when the cache was used).
    pub cache: CachedLatest,
    /// True when the cache answered without a lookup.
    pub from_cache: bool,
    /// Upstream's latest when it was older than the running version (kept back).
    pub held_back: Option<String>,
    /// The lookup error, when a stale cache answered instead.
    pub lookup_error: Option<InstallError>,
}

/// Decides the "latest" version: a fresh cache answers; otherwise `lookup()` runs (the
/// only effect), and on failure a stale cache still answers (the error is returned
/// alongside); with no cache the error is returned. Never lower than `running`.
pub fn resolve_latest(
    cache: Option<&CachedLatest>,
    now: u64,
    ttl: Duration,
    running: Option<&str>,
    lookup: impl FnOnce() -> Result<String, InstallError>,
) -> Result<ResolvedLatest, InstallError> {
    let finish = |found: &str, cache: CachedLatest, from_cache, lookup_error| {
        let version = never_downgrade(found, running);
        ResolvedLatest {
            held_back: (version != found).then(|| found.to_string()),
            version,
            cache,
            from_cache,
            lookup_error,
        }
    };
    if let Some(c) =
        cache.filter(|c| cache_is_fresh(c, now, ttl) && crate::config::is_valid_version(&c.version))
    {
        return Ok(finish(&c.version, c.clone(), true, None));
    }
    match lookup() {
        Ok(found) => {
            let c = CachedLatest {
                version: found.clone(),
                checked_at: now,
            };
            Ok(finish(&found, c, false, None))
        }
        Err(e) => match cache.filter(|c| crate::config::is_valid_version(&c.version)) {
            Some(c) => Ok(finish(&c.version, c.clone(), true, Some(e))),
            None => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tag_name() {
        assert_eq!(
            parse_latest(br#"{"tag_name":"v8.2.5","assets":[]}"#).unwrap(),
            "8.2.5"
        );
        assert_eq!(parse_latest(br#"{"tag_name":"7.14.3"}"#).unwrap(), "7.14.3");
        for bad in [
            &b"{}"[..],
            b"[]",
            b"nope",
            br#"{"tag_name":"latest"}"#,
            br#"{"tag_name":5}"#,
        ] {
            assert!(parse_latest(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_order() {
        use Ordering::*;
        let c = |a, b| compare_versions(a, b).unwrap();
        assert_eq!(c("8.0.0", "7.14.3"), Greater);
        assert_eq!(c("10.0.0", "9.99.99"), Greater);
        assert_eq!(c("8.0.0-rc.1", "8.0.0"), Less);
        assert_eq!(c("8.0.0-rc.2", "8.0.0-rc.10"), Less);
        assert_eq!(c("8.0.0-rc.1", "8.0.0-beta"), Greater);
        assert_eq!(c("8.0.0-1", "8.0.0-beta"), Less, "numeric < alphanumeric");
        assert_eq!(c("8.0.0-rc", "8.0.0-rc.1"), Less);
        assert_eq!(c("7.14.3", "7.14.3"), Equal);
        assert_eq!(compare_versions("x", "7.0.0"), None);
    }

    #[test]
    fn never_downgrades() {
        assert_eq!(never_downgrade("8.2.5", Some("8.3.0")), "8.3.0");
        assert_eq!(never_downgrade("8.3.0", Some("8.2.5")), "8.3.0");
        assert_eq!(never_downgrade("8.2.5", None), "8.2.5");
        assert_eq!(never_downgrade("8.2.5", Some("garbage")), "8.2.5");
    }

    fn cached(v: &str, at: u64) -> CachedLatest {
        CachedLatest {
            version: v.into(),
            checked_at: at,
        }
    }

    #[test]
    fn fresh_cache_answers_without_lookup() {
        let c = cached("8.2.5", 1000);
        let r = resolve_latest(Some(&c), 1000 + 3599, LATEST_CACHE_TTL, None, || {
            panic!("must not look up")
        })
        .unwrap();
        assert_eq!(r.version, "8.2.5");
        assert!(r.from_cache);
        assert_eq!(r.cache, c);
    }

    #[test]
    fn stale_or_future_cache_looks_up() {
        for (at, now) in [(1000, 1000 + 3600), (5000, 1000)] {
            let mut called = false;
            let r = resolve_latest(
                Some(&cached("8.2.4", at)),
                now,
                LATEST_CACHE_TTL,
                None,
                || {
                    called = true;
                    Ok("8.2.5".into())
                },
            )
            .unwrap();
            assert!(called);
            assert_eq!(r.version, "8.2.5");
            assert!(!r.from_cache);
            assert_eq!(r.cache, cached("8.2.5", now));
        }
    }

    #[test]
    fn lookup_failure_falls_back_to_stale_cache_or_errors() {
        let fail = || {
            Err(InstallError::Latest {
                url: "u".into(),
                detail: "HTTP 403: rate limit".into(),
                permanent: false,
            })
        };
        let r = resolve_latest(
            Some(&cached("8.2.4", 0)),
            99_999,
            LATEST_CACHE_TTL,
            None,
            fail,
        )
        .unwrap();
        assert_eq!(r.version, "8.2.4");
        assert!(r.lookup_error.is_some());
        assert!(resolve_latest(None, 99_999, LATEST_CACHE_TTL, None, fail).is_err());
    }

    #[test]
    fn older_upstream_is_held_back() {
        let r = resolve_latest(None, 10, LATEST_CACHE_TTL, Some("8.3.0"), || {
            Ok("8.2.5".into())
        })
        .unwrap();
        assert_eq!(r.version, "8.3.0");
        assert_eq!(r.held_back.as_deref(), Some("8.2.5"));
        assert_eq!(
            r.cache.version, "8.2.5",
            "the cache records what upstream said"
        );
    }
}
