//! The certificates in the certs directory, indexed by the names they are valid for.
//!
//! Every `*.crt`, `*.pem` or `*.cer` file holding a certificate chain is one certificate; its
//! private key (PKCS#8, PKCS#1 or SEC1, in PEM) is in the same file or in `<stem>.key`. Names
//! come from the certificate's own subject alternative names (the common name when it has
//! none), so nothing about names is configured by hand. A wildcard name `*.example.com` covers
//! exactly one label, as TLS clients check it. Each certificate gets its own rustls server
//! config (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`), picked per connection by SNI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// One loaded certificate.
#[derive(Debug)]
pub struct CertEntry {
    pub file: PathBuf,
    /// DNS names as in the certificate, lower case (`*.example.com` for wildcards).
    pub names: Vec<String>,
    pub config: Arc<ServerConfig>,
}

/// Why a certificate file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct CertError {
    pub file: String,
    pub reason: String,
}

/// All usable certificates, by name.
#[derive(Debug, Default)]
pub struct CertStore {
    by_file: HashMap<PathBuf, Arc<CertEntry>>,
    exact: HashMap<String, Arc<CertEntry>>,
    wildcard: HashMap<String, Arc<CertEntry>>,
    default: Option<Arc<CertEntry>>,
}

impl CertStore {
    /// Loads `dir`. A file that fails to load is reported in the returned errors; if
    /// `previous` had loaded that file before, its old certificate stays in use.
    pub fn load(
        dir: &Path,
        default_name: Option<&str>,
        previous: Option<&CertStore>,
    ) -> (CertStore, Vec<CertError>) {
        let mut errors = Vec::new();
        let mut by_file = HashMap::new();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| is_cert_file(path))
                .collect(),
            Err(error) => {
                errors.push(CertError {
                    file: dir.display().to_string(),
                    reason: format!("cannot read the certs directory: {error}"),
                });
                Vec::new()
            }
        };
        files.sort();
        for file in files {
            match load_entry(&file) {
                Ok(entry) => {
                    by_file.insert(file, Arc::new(entry));
                }
                Err(reason) => {
                    let kept = previous.and_then(|p| p.by_file.get(&file)).cloned();
                    errors.push(CertError {
                        file: file.display().to_string(),
                        reason: if kept.is_some() {
                            format!("{reason}; the previously loaded certificate stays in use")
                        } else {
                            reason
                        },
                    });
                    if let Some(kept) = kept {
                        by_file.insert(file, kept);
                    }
                }
            }
        }
        let mut store = CertStore {
            by_file,
            ..CertStore::default()
        };
        let mut entries: Vec<&Arc<CertEntry>> = store.by_file.values().collect();
        entries.sort_by(|a, b| a.file.cmp(&b.file));
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for entry in entries {
            for name in &entry.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix.to_string()),
                    None => (&mut exact, name.clone()),
                };
                map.entry(key).or_insert_with(|| Arc::clone(entry));
            }
        }
        store.exact = exact;
        store.wildcard = wildcard;
        store.default = default_name.and_then(|name| store.find(&name.to_ascii_lowercase()));
        // With no certificate at all the caller reports that; a missing default is news only
        // when there are certificates to choose from.
        if let (Some(name), None, false) = (default_name, &store.default, store.by_file.is_empty())
        {
            errors.push(CertError {
                file: dir.display().to_string(),
                reason: format!("default_cert {name:?} matches no certificate"),
            });
        }
        (store, errors)
    }

    /// The server config for a ClientHello's SNI; the default certificate only when the
    /// client sends no SNI. A name no certificate covers gets nothing (the caller answers
    /// `unrecognized_name`): a certificate for another name would fail the client's check
    /// anyway, less clearly, and would tell a scanner the default certificate's names.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<ServerConfig>> {
        let entry = match server_name {
            Some(name) => self.find(&name.trim_end_matches('.').to_ascii_lowercase()),
            None => self.default.clone(),
        };
        entry.map(|entry| Arc::clone(&entry.config))
    }

    fn find(&self, name: &str) -> Option<Arc<CertEntry>> {
        if let Some(entry) = self.exact.get(name) {
            return Some(Arc::clone(entry));
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }

    /// Number of certificates loaded.
    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }
}

fn is_cert_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden
        && path.is_file()
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("crt" | "pem" | "cer")
        )
}

fn load_entry(file: &Path) -> Result<CertEntry, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("cannot read: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    let key = match PrivateKeyDer::from_pem_file(file) {
        Ok(key) => key,
        Err(_) => {
            let key_file = file.with_extension("key");
            PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
                format!(
                    "no private key in the file, and none in {}: {e}",
                    key_file.display()
                )
            })?
        }
    };
    let names = names_of(&chain[0])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(CertEntry {
        file: file.to_path_buf(),
        names,
        config: Arc::new(config),
    })
}

/// The DNS names a certificate is valid for: its SANs, else its common name.
fn names_of(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    Some(dns.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    if names.is_empty() {
        return Err("the certificate names no DNS name (no SAN, no CN)".into());
    }
    Ok(names)
}
