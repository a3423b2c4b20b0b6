//! Which proxies the charm and the worker use.
//!
//! Owns: merging the model's proxy settings (Juju exports them to hooks as
//! `JUJU_CHARM_HTTP_PROXY`, `JUJU_CHARM_HTTPS_PROXY` and `JUJU_CHARM_NO_PROXY`, always
//! present and possibly empty: juju/juju `worker/uniter/runner/context/context.go`,
//! `HookVars`) with the `http-proxy`, `https-proxy` and `no-proxy` options, which win
//! when set; and the worker's proxy variables. Juju does not put these values in the
//! workload's environment (juju/juju `environs/config/config.go`), so the charm passes
//! them on itself.
//!
//! Hazards: a proxy URL may hold a password: never log or show the values; they are
//! written only to the worker's 0600 env file.

use std::collections::BTreeMap;

use crate::config::ProxyOptions;
use crate::juju::context::Proxies;

/// The proxies in effect: each option that is set overrides the model's value.
pub fn effective(model: &Proxies, options: &ProxyOptions) -> Proxies {
    let pick = |opt: &Option<String>, model: &Option<String>| {
        opt.clone()
            .or_else(|| model.clone())
            .filter(|v| !v.trim().is_empty())
    };
    Proxies {
        http: pick(&options.http, &model.http),
        https: pick(&options.https, &model.https),
        no_proxy: pick(&options.no_proxy, &model.no_proxy),
    }
}

/// The worker's proxy variables. `concourse worker` reads exactly these lower-case
/// names (explicit `env:` tags in concourse/concourse `worker/workercmd/worker_config.go`:
/// "HTTP proxy endpoint to use for containers") and gives them to build containers;
/// there is no `CONCOURSE_HTTP_PROXY`. Unset proxies are left out: an empty value would
/// still be set in every container.
pub fn worker_env(p: &Proxies) -> BTreeMap<String, String> {
    [
        ("http_proxy", &p.http),
        ("https_proxy", &p.https),
        ("no_proxy", &p.no_proxy),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Proxies {
        Proxies {
            http: Some("http://model:3128".into()),
            https: Some("http://model:3129".into()),
            no_proxy: Some("10.0.0.0/8".into()),
        }
    }

    #[test]
    fn options_override_the_model_one_by_one() {
        let opts = ProxyOptions {
            https: Some("http://mine:8080".into()),
            ..ProxyOptions::default()
        };
        let e = effective(&model(), &opts);
        assert_eq!(e.http.as_deref(), Some("http://model:3128"));
        assert_eq!(e.https.as_deref(), Some("http://mine:8080"));
        assert_eq!(e.no_proxy.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(
            effective(&Proxies::default(), &ProxyOptions::default()),
            Proxies::default()
        );
    }

    #[test]
    fn the_worker_gets_lower_case_names_and_nothing_unset() {
        let env = worker_env(&model());
        assert_eq!(env["http_proxy"], "http://model:3128");
        assert_eq!(env["https_proxy"], "http://model:3129");
        assert_eq!(env["no_proxy"], "10.0.0.0/8");
        assert!(worker_env(&Proxies::default()).is_empty());
    }
}
