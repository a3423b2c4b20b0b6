//! HTTP for the installer: the client (TLS, timeouts, proxies), the upstream `.sha1`
//! file, and starting a (possibly resumed) download.
//!
//! Owns: building the one `reqwest` blocking client from explicit settings, mapping
//! HTTP statuses and transport failures to [`InstallError`], and the Range protocol.
//! Invariants: TLS certificates are always verified (rustls, webpki roots); proxies come
//! only from the caller (Juju's `JUJU_CHARM_*_PROXY` values), never from the process
//! environment; a resumed download continues only on `206` whose `Content-Range` starts
//! exactly at the bytes we have, otherwise it restarts from zero.
//! Hazards: URLs may carry credentials (user info, signed queries) and proxy URLs may
//! carry passwords: messages use [`redact_url`] and never print proxy values.

use std::io::Read;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderValue, CONTENT_RANGE, RANGE};
use reqwest::{Proxy, StatusCode, Url};

use super::InstallError;

/// Network settings, all explicit (nothing is read from the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for the response headers, and for each read of the body.
    pub read_timeout: Duration,
    /// `JUJU_CHARM_HTTP_PROXY`.
    pub http_proxy: Option<String>,
    /// `JUJU_CHARM_HTTPS_PROXY`.
    pub https_proxy: Option<String>,
    /// `JUJU_CHARM_NO_PROXY` (comma-separated hosts, domains, CIDRs).
    pub no_proxy: Option<String>,
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            user_agent: concat!("concourse-ci-charm/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Builds the blocking client: verified TLS, explicit proxies only, timeouts, redirects.
pub fn build_client(http: &HttpOptions) -> Result<Client, InstallError> {
    let no_proxy = http
        .no_proxy
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .and_then(reqwest::NoProxy::from_string);
    // `no_proxy()` first: it turns off reqwest's reading of *_PROXY from the environment.
    let mut b = Client::builder()
        .no_proxy()
        .connect_timeout(http.connect_timeout)
        .timeout(http.read_timeout)
        .user_agent(http.user_agent.clone())
        .https_only(false);
    let proxies: [(&'static str, &Option<String>, bool); 2] = [
        ("JUJU_CHARM_HTTP_PROXY", &http.http_proxy, false),
        ("JUJU_CHARM_HTTPS_PROXY", &http.https_proxy, true),
    ];
    for (which, value, https) in proxies {
        if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            let p = if https {
                Proxy::https(v)
            } else {
                Proxy::http(v)
            };
            let p = p.map_err(|_| InstallError::InvalidProxy { which })?;
            b = b.proxy(p.no_proxy(no_proxy.clone()));
        }
    }
    b.build().map_err(|e| InstallError::Network {
        url: String::new(),
        detail: format!("cannot build the HTTP client: {}", error_chain(e)),
    })
}

/// `scheme://host[:port]/path`: no user info, query or fragment (they may be secret).
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid URL>".to_string(),
    }
}

/// The URL of the checksum published beside a tarball: the path plus `.sha1` (query
/// kept, for signed mirrors).
pub fn sha1_url(url: &str) -> Result<String, InstallError> {
    let mut u = parse_url(url)?;
    let path = format!("{}.sha1", u.path());
    u.set_path(&path);
    Ok(u.to_string())
}

/// Parses an http(s) URL.
pub fn parse_url(url: &str) -> Result<Url, InstallError> {
    let u = Url::parse(url).map_err(|e| InstallError::InvalidUrl {
        url: redact_url(url),
        reason: e.to_string(),
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(InstallError::InvalidUrl {
            url: redact_url(url),
            reason: "only http(s) URLs with a host are supported".into(),
        });
    }
    Ok(u)
}

/// The file name a URL downloads to: its last path segment when it is a safe name,
/// else `concourse-<version>.tgz`.
pub fn download_file_name(url: &str, version: &str) -> String {
    let seg = Url::parse(url).ok().and_then(|u| {
        u.path_segments()
            .and_then(|mut s| s.next_back().map(str::to_string))
    });
    match seg {
        Some(s) if crate::storage_coordinator::layout::is_safe_file_name(&s) => s,
        _ => format!("concourse-{version}.tgz"),
    }
}

/// Parses an upstream `.sha1` file (`<40 hex>  <file name>`): the first token,
/// lowercased; `None` when it is not a sha1.
pub fn parse_sha1_file(text: &str) -> Option<String> {
    let tok = text.split_whitespace().next()?;
    (tok.len() == 40 && tok.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| tok.to_ascii_lowercase())
}

/// Fetches and parses `<url>.sha1`. Fails closed: any problem is an error.
pub fn fetch_sha1(client: &Client, tarball_url: &str) -> Result<String, InstallError> {
    let url = sha1_url(tarball_url)?;
    let shown = redact_url(&url);
    let resp = client
        .get(&url)
        .send()
        .map_err(|e| InstallError::ChecksumUnavailable {
            url: shown.clone(),
            detail: error_chain(e),
            status: None,
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(InstallError::ChecksumUnavailable {
            url: shown,
            detail: format!("HTTP {}", status.as_u16()),
            status: Some(status.as_u16()),
        });
    }
    let mut body = Vec::new();
    resp.take(4096)
        .read_to_end(&mut body)
        .map_err(|e| InstallError::ChecksumUnavailable {
            url: shown.clone(),
            detail: e.to_string(),
            status: None,
        })?;
    parse_sha1_file(&String::from_utf8_lossy(&body))
        .ok_or(InstallError::ChecksumFileInvalid { url: shown })
}

/// How a download starts.
pub enum Start {
    /// Body bytes follow, from `offset` (0, or the bytes we already have on a 206);
    /// `total` is the size of the whole file when known.
    Body {
        resp: Response,
        offset: u64,
        total: Option<u64>,
    },
    /// The server says we already have all `total` bytes (416 with our exact length).
    AlreadyComplete { total: u64 },
}

/// Starts a GET of `url`, asking for `bytes=<have>-` when `have > 0`. A server that
/// ignores the range (200) restarts the download at 0; a 206 must start exactly at
/// `have`.
pub fn start_download(client: &Client, url: &str, have: u64) -> Result<Start, InstallError> {
    let shown = redact_url(url);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().map_err(|e| InstallError::Network {
        url: shown.clone(),
        detail: error_chain(e),
    })?;
    let status = resp.status();
    match status {
        StatusCode::OK => {
            let total = resp.content_length();
            Ok(Start::Body {
                resp,
                offset: 0,
                total,
            })
        }
        StatusCode::PARTIAL_CONTENT if have > 0 => {
            let cr = parse_content_range(resp.headers().get(CONTENT_RANGE)).ok_or_else(|| {
                InstallError::BadContentRange {
                    url: shown.clone(),
                    detail: "206 without a usable Content-Range".into(),
                }
            })?;
            match cr {
                ContentRange::Bytes { start, total, .. } if start == have => {
                    let total = total.or_else(|| resp.content_length().map(|l| l + have));
                    Ok(Start::Body {
                        resp,
                        offset: have,
                        total,
                    })
                }
                other => Err(InstallError::BadContentRange {
                    url: shown,
                    detail: format!("asked for bytes from {have}, got {other:?}"),
                }),
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
            match parse_content_range(resp.headers().get(CONTENT_RANGE)) {
                Some(ContentRange::Unsatisfied { total }) if total == have => {
                    Ok(Start::AlreadyComplete { total })
                }
                _ => Err(InstallError::BadContentRange {
                    url: shown,
                    detail: format!(
                        "416 for bytes from {have}: the kept partial is longer than the file"
                    ),
                }),
            }
        }
        s => Err(InstallError::Http {
            url: shown,
            status: s.as_u16(),
        }),
    }
}

/// A parsed `Content-Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes <start>-<end>/<total or *>`
    Bytes {
        start: u64,
        end: u64,
        total: Option<u64>,
    },
    /// `bytes */<total>`
    Unsatisfied { total: u64 },
}

/// Parses `Content-Range`; `None` when absent or malformed.
pub fn parse_content_range(h: Option<&HeaderValue>) -> Option<ContentRange> {
    let s = h?.to_str().ok()?.trim();
    let rest = s.strip_prefix("bytes ")?.trim();
    let (range, total) = rest.split_once('/')?;
    if range == "*" {
        return Some(ContentRange::Unsatisfied {
            total: total.parse().ok()?,
        });
    }
    let (a, b) = range.split_once('-')?;
    let (start, end): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some(ContentRange::Bytes { start, end, total })
}

/// Whether an HTTP status is worth retrying (timeouts, rate limits, server errors).
pub fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}

/// `outer: inner: root` of a reqwest error, without the URL (callers name the URL,
/// redacted, in their own fields).
pub fn error_chain(e: reqwest::Error) -> String {
    crate::error_chain(&e.without_url())
}

/// Whether `url` exists at its source: HEAD of its `.sha1` (small) answers 2xx.
/// The error says what answered, for an operator's message.
pub fn exists_at_source(http: &HttpOptions, url: &str) -> Result<(), String> {
    let client = build_client(http).map_err(|e| e.to_string())?;
    let sha1 = format!("{url}.sha1");
    match client.head(&sha1).send() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!(
            "{} answered HTTP {}; check the version and release-url",
            redact_url(&sha1),
            r.status().as_u16()
        )),
        Err(e) => Err(format!("cannot reach {}: {e}", redact_url(&sha1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_files() {
        let h = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(
            parse_sha1_file(&format!("{h}  concourse-7.14.3-linux-amd64.tgz\n")).as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(
            parse_sha1_file(&format!("{h}\n")).as_deref(),
            Some(h.to_ascii_lowercase().as_str())
        );
        for bad in [
            "",
            "  \n",
            "xyz  file",
            &h[..39],
            &format!("{h}0  f"),
            "<html>404</html>",
        ] {
            assert_eq!(parse_sha1_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            redact_url("https://user:pw@mirror.example/c.tgz?sig=secret#x"),
            "https://mirror.example/c.tgz"
        );
        assert_eq!(redact_url("not a url"), "<invalid URL>");
        assert_eq!(
            sha1_url("https://h/v1/c.tgz?sig=1").unwrap(),
            "https://h/v1/c.tgz.sha1?sig=1"
        );
        assert!(sha1_url("ftp://h/c.tgz").is_err());
        assert_eq!(
            download_file_name(
                "https://h/v7.14.3/concourse-7.14.3-linux-amd64.tgz",
                "7.14.3"
            ),
            "concourse-7.14.3-linux-amd64.tgz"
        );
        assert_eq!(
            download_file_name("https://h/dl/", "7.14.3"),
            "concourse-7.14.3.tgz"
        );
        assert_eq!(
            download_file_name("https://h/.hidden", "7.14.3"),
            "concourse-7.14.3.tgz"
        );
    }

    #[test]
    fn content_ranges() {
        let p = |s: &str| parse_content_range(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(
            p("bytes 100-999/1000"),
            Some(ContentRange::Bytes {
                start: 100,
                end: 999,
                total: Some(1000)
            })
        );
        assert_eq!(
            p("bytes 0-9/*"),
            Some(ContentRange::Bytes {
                start: 0,
                end: 9,
                total: None
            })
        );
        assert_eq!(
            p("bytes */1000"),
            Some(ContentRange::Unsatisfied { total: 1000 })
        );
        for bad in [
            "",
            "bytes",
            "items 0-1/2",
            "bytes 5-1/10",
            "bytes 0-10/10",
            "bytes a-b/c",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        assert_eq!(parse_content_range(None), None);
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_transient(s), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 416] {
            assert!(!status_is_transient(s), "{s}");
        }
    }

    #[test]
    fn bad_proxy_is_named_without_its_value() {
        let http = HttpOptions {
            https_proxy: Some("http://user:secret@[bad".into()),
            ..HttpOptions::default()
        };
        let e = build_client(&http).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("JUJU_CHARM_HTTPS_PROXY"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
        let ok = HttpOptions {
            http_proxy: Some("http://proxy:3128".into()),
            https_proxy: Some("http://proxy:3128".into()),
            no_proxy: Some("127.0.0.1,localhost".into()),
            ..HttpOptions::default()
        };
        build_client(&ok).unwrap();
    }
}
