//! HTTP for the installer: the client (TLS, timeouts, proxies), the upstream `.sha1`
//! file, and starting a (possibly resumed) download.
//!
//! Owns: building the one `reqwest` blocking client from explicit settings, mapping
//! HTTP statuses and transport failures to [`InstallError`], and the Range protocol.
//! Invariants: TLS certificates are always verified (rustls) against the system's CA
//! store, the bundled webpki roots and the operator's `release-ca`; a certificate that
//! does not verify is a permanent error naming `release-ca`; a redirect never leaves
//! https for http (at most 10 redirects); proxies come only from the caller (Juju's
//! `JUJU_CHARM_*_PROXY` values), never from the process environment; a resumed download
//! continues only on `206` whose `Content-Range` starts exactly at the bytes we have,
//! otherwise it restarts from zero.
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
    /// CA certificates (PEM) trusted besides the system's and the bundled ones
    /// (`release-ca`: a TLS-inspecting proxy, a private mirror).
    pub extra_ca_pem: Option<String>,
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
            extra_ca_pem: None,
        }
    }
}

/// How many redirects a request may follow.
pub const MAX_REDIRECTS: usize = 10;

/// Whether a redirect from the chain `previous` (the first URL first) to `next` may be
/// followed: never from https back to http, at most [`MAX_REDIRECTS`].
pub fn check_redirect(previous: &[Url], next: &Url) -> Result<(), RedirectRefused> {
    if previous.iter().any(|u| u.scheme() == "https") && next.scheme() != "https" {
        return Err(RedirectRefused::Downgrade {
            to: redact_url(next.as_str()),
        });
    }
    if previous.len() > MAX_REDIRECTS {
        return Err(RedirectRefused::TooMany);
    }
    Ok(())
}

/// Why a redirect was not followed (the error inside reqwest's redirect error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectRefused {
    #[error("redirect from https to the plain http URL {to}")]
    Downgrade { to: String },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooMany,
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
        .https_only(false)
        .redirect(reqwest::redirect::Policy::custom(
            |attempt| match check_redirect(attempt.previous(), attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            },
        ));
    if let Some(pem) = http
        .extra_ca_pem
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    {
        for cert in parse_ca_bundle(pem)? {
            b = b.add_root_certificate(cert);
        }
    }
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

/// The certificates of a PEM bundle (`release-ca`); at least one.
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<reqwest::Certificate>, InstallError> {
    let invalid = |detail: String| InstallError::InvalidCa { detail };
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| invalid(error_chain(e)))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// A request that failed before any HTTP status, as the installer reports it.
pub(crate) enum SendFailure {
    /// The server's certificate did not verify.
    Tls(String),
    /// A redirect was refused.
    Redirect(RedirectRefused),
    /// Anything else (connection refused, timeout, reset, …): may pass.
    Other(String),
}

impl SendFailure {
    pub(crate) fn of(e: reqwest::Error) -> SendFailure {
        let e = e.without_url();
        if let Some(r) = find_in_chain::<RedirectRefused>(&e) {
            return SendFailure::Redirect(r.clone());
        }
        if let Some(t) = find_in_chain::<rustls::Error>(&e) {
            if matches!(
                t,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
            ) {
                return SendFailure::Tls(t.to_string());
            }
        }
        SendFailure::Other(crate::error_chain(&e))
    }

    /// The installer's error for a request to `url` (shown redacted); `other` builds the
    /// one for a failure that may pass.
    pub(crate) fn into_error(
        self,
        url: &str,
        other: impl FnOnce(String) -> InstallError,
    ) -> InstallError {
        match self {
            SendFailure::Tls(detail) => InstallError::Tls {
                url: redact_url(url),
                detail,
            },
            SendFailure::Redirect(r) => InstallError::RedirectRefused {
                url: redact_url(url),
                detail: r.to_string(),
            },
            SendFailure::Other(detail) => other(detail),
        }
    }
}

/// The first error of type `T` in `e`'s chain, looking inside `io::Error`s too (whose
/// `source` skips the error they wrap).
fn find_in_chain<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(t) = find_in_chain::<T>(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
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
    let resp = client.get(&url).send().map_err(|e| {
        SendFailure::of(e).into_error(&url, |detail| InstallError::ChecksumUnavailable {
            url: shown.clone(),
            detail,
            status: None,
        })
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
    let resp = req.send().map_err(|e| {
        SendFailure::of(e).into_error(url, |detail| InstallError::Network {
            url: shown.clone(),
            detail,
        })
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
    fn redirects_never_leave_https() {
        let u = |s: &str| Url::parse(s).unwrap();
        let ok = |prev: &[&str], next: &str| {
            let prev: Vec<Url> = prev.iter().map(|p| u(p)).collect();
            check_redirect(&prev, &u(next))
        };
        assert_eq!(ok(&["https://a/x"], "https://b/y"), Ok(()));
        assert_eq!(ok(&["http://a/x"], "https://b/y"), Ok(()));
        assert_eq!(ok(&["http://a/x"], "http://b/y"), Ok(()));
        for prev in [&["https://a/x"][..], &["http://a/x", "https://b/y"][..]] {
            assert_eq!(
                ok(prev, "http://user:pw@c/z?sig=1"),
                Err(RedirectRefused::Downgrade {
                    to: "http://c/z".into()
                })
            );
        }
        let many: Vec<&str> = std::iter::repeat_n("https://a/x", MAX_REDIRECTS + 1).collect();
        assert_eq!(ok(&many, "https://a/y"), Err(RedirectRefused::TooMany));
    }

    #[test]
    fn ca_bundles() {
        assert!(matches!(
            parse_ca_bundle("not a certificate"),
            Err(InstallError::InvalidCa { .. })
        ));
        assert!(matches!(
            parse_ca_bundle(""),
            Err(InstallError::InvalidCa { .. })
        ));
        // A real one: the test CA of the TLS front.
        let front = release_fixtures::tls::TlsFront::start("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(parse_ca_bundle(front.ca_pem()).unwrap().len(), 1);
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
