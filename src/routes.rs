//! The immutable host -> app table that every request reads once.
//!
//! Built from a validated [`Config`] and the live [`AppState`]s, then swapped in whole on a
//! reload, so a request never sees half of one config and half of another. Exact hosts beat
//! wildcards; among wildcards the longest suffix wins, so `*.api.example.com` beats
//! `*.example.com`. A wildcard matches names any number of labels below its suffix (as nginx's
//! `server_name *.example.com` does), but not the suffix itself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::apps::AppState;
use crate::config::{AppSpec, Config, GatewaySettings, HostPattern};

/// One app as a request sees it: the spec from this snapshot, the live state across snapshots.
pub struct Route {
    pub spec: Arc<AppSpec>,
    pub app: Arc<AppState>,
    /// Set for a tag host (`<tag>-<app>.<project>.<domain>`): requests go to that tag's
    /// revision instead of the split.
    pub tag: Option<Box<str>>,
}

/// Host -> route for one config snapshot, plus the gateway settings of the same snapshot.
/// Routes by host. foldhash rather than std's SipHash: a lookup runs on every request, and
/// the keys come from the configuration, not from clients (who only look up).
type HostMap = HashMap<Box<str>, Arc<Route>, foldhash::fast::RandomState>;

pub struct RouteTable {
    exact: HostMap,
    wildcard: HostMap,
    routes: Vec<Arc<Route>>,
    pub settings: Arc<GatewaySettings>,
}

impl RouteTable {
    /// Builds the table for `config`, pointing every app at its live state in `states`.
    /// Apps missing from `states` are left out (the registry always provides all of them).
    pub fn build(config: &Config, states: &HashMap<String, Arc<AppState>>) -> Self {
        let mut exact = HostMap::default();
        let mut wildcard = HostMap::default();
        let mut routes = Vec::with_capacity(config.apps.len());
        for spec in &config.apps {
            let Some(app) = states.get(&spec.name) else {
                continue;
            };
            let route = Arc::new(Route {
                spec: Arc::clone(spec),
                app: Arc::clone(app),
                tag: None,
            });
            for (tag, host) in spec.traffic.iter().filter_map(|t| t.tag.as_ref()) {
                let tagged = Arc::new(Route {
                    spec: Arc::clone(spec),
                    app: Arc::clone(app),
                    tag: Some(tag.as_str().into()),
                });
                exact.insert(host.as_str().into(), tagged);
            }
            for host in &spec.hosts {
                match host {
                    HostPattern::Exact(name) => {
                        exact.insert(name.as_str().into(), Arc::clone(&route));
                    }
                    HostPattern::Wildcard(suffix) => {
                        wildcard.insert(suffix.as_str().into(), Arc::clone(&route));
                    }
                }
            }
            routes.push(route);
        }
        RouteTable {
            exact,
            wildcard,
            routes,
            settings: Arc::new(config.gateway.clone()),
        }
    }

    /// An empty table, for the moment before the first config is loaded.
    pub fn empty(settings: GatewaySettings) -> Self {
        RouteTable {
            exact: HostMap::default(),
            wildcard: HostMap::default(),
            routes: Vec::new(),
            settings: Arc::new(settings),
        }
    }

    /// The route for a host already in normal form (see [`normalize_host`]).
    pub fn lookup(&self, host: &str) -> Option<&Arc<Route>> {
        if let Some(route) = self.exact.get(host) {
            return Some(route);
        }
        // Try ever shorter suffixes: "a.b.example.com" -> "b.example.com" -> "example.com".
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(route) = self.wildcard.get(rest) {
                return Some(route);
            }
        }
        None
    }

    /// Every route, in app-name order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Every app once (a tag host's route is the same app).
    pub fn apps(&self) -> Vec<Arc<AppState>> {
        let mut apps: Vec<Arc<AppState>> = Vec::new();
        for route in &self.routes {
            if !apps.iter().any(|app| Arc::ptr_eq(app, &route.app)) {
                apps.push(Arc::clone(&route.app));
            }
        }
        apps
    }
}

/// Reduces a Host header or URI authority to the name used for routing: the port, a trailing
/// dot and upper case are dropped; IPv6 literals keep their brackets. Allocates only when the
/// name has upper-case letters. Returns `None` for an empty or malformed host, including a
/// name with an empty label (`a..b`, `.a`, `a..`).
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let after = &raw[end + 1..];
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        &raw[..=end]
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if let Some(ipv6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let valid = !ipv6.is_empty()
            && ipv6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return valid.then_some(Cow::Borrowed(host));
    }
    // A name: letters, digits, `-`, `.`, `_`, and no empty label either: `e...` would
    // otherwise become `e..`, a name that normalises again to something else, so two
    // spellings of one host could route apart (found by the `host` fuzz target). Anything
    // else, such as `evil.com,app.example.com`, could route by one reading and be read
    // another way by the instance, which gets the Host as sent. One pass: this runs for
    // every request.
    let mut label_empty = true;
    let mut upper = false;
    for byte in host.bytes() {
        match byte {
            b'.' if label_empty => return None,
            b'.' => label_empty = true,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label_empty = false,
            b'A'..=b'Z' => (upper, label_empty) = (true, false),
            _ => return None,
        }
    }
    if label_empty {
        // Empty, or ending in an empty label.
        return None;
    }
    if upper {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts_with_characters_outside_names_are_malformed() {
        for raw in [
            "evil.com,app.example.com",
            "app.example.com;x",
            "a b",
            "user@app.example.com",
            "app.example.com/x",
            "[::1%eth0]",
            "[]",
            "app\"x",
            "e...",
            "a..b",
            ".a",
            "..",
        ] {
            assert_eq!(normalize_host(raw), None, "{raw:?}");
        }
        assert_eq!(normalize_host("my_app.local").unwrap(), "my_app.local");
        assert_eq!(
            normalize_host("[::ffff:10.0.0.1]:80").unwrap(),
            "[::ffff:10.0.0.1]"
        );
    }

    #[test]
    fn normalizes_port_case_and_trailing_dot() {
        assert_eq!(
            normalize_host("Hello.Demo.LOCALHOST:8080").unwrap(),
            "hello.demo.localhost"
        );
        assert_eq!(normalize_host("example.com.").unwrap(), "example.com");
        assert_eq!(normalize_host("example.com.:443").unwrap(), "example.com");
        assert_eq!(normalize_host("[::1]:8080").unwrap(), "[::1]");
        assert_eq!(normalize_host("[::1]").unwrap(), "[::1]");
        assert!(normalize_host("").is_none());
        assert!(normalize_host(":80").is_none());
        assert!(normalize_host("a:b").is_none());
        assert!(normalize_host("user@host").is_none());
    }

    /// The rule for names as first written (a validity scan, a split on `.` for empty labels,
    /// a scan for upper case), kept as the oracle for the one-pass version.
    fn name_by_the_rule(host: &str) -> Option<String> {
        let valid = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !host.split('.').any(str::is_empty);
        (!host.is_empty() && valid).then(|| host.to_ascii_lowercase())
    }

    #[test]
    fn the_one_pass_scan_agrees_with_the_rule_on_every_short_name() {
        let alphabet = ['a', 'Z', '0', '.', '-', '_', ',', ' ', '@'];
        let mut names = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = names
                .iter()
                .filter(|name| name.len() == names.last().unwrap().len())
                .flat_map(|name| alphabet.iter().map(move |c| format!("{name}{c}")))
                .collect();
            names.extend(longer);
        }
        for name in names {
            // The trailing dot is dropped before the scan, as in `normalize_host`.
            let expected = name_by_the_rule(name.strip_suffix('.').unwrap_or(&name));
            let got = normalize_host(&name).map(|host| host.into_owned());
            if name.trim() == name {
                assert_eq!(got, expected, "{name:?}");
            }
        }
    }
}
