//! `tidegate certs dev`: a self-signed development certificate for the configured domain.
//!
//! Names: the domain, `*.<domain>`, and `*.<project>.<domain>` for every project in the
//! config, so every default app host `<app>.<project>.<domain>` is covered (a TLS wildcard
//! covers one label only). Written as `dev.crt` and `dev.key` (mode 0600) in the certs
//! directory; the gateway picks them up live.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Writes the development certificate; returns the certificate's path and its names.
pub fn write_dev_cert(config: &Config, certs_dir: &Path) -> Result<(PathBuf, Vec<String>), String> {
    let domain = &config.gateway.domain;
    let mut names = vec![domain.clone(), format!("*.{domain}")];
    for app in &config.apps {
        let name = format!("*.{}.{domain}", app.project);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("tidegate development ({domain})"),
    );
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(certs_dir).map_err(|e| format!("{}: {e}", certs_dir.display()))?;
    let cert_file = certs_dir.join("dev.crt");
    let key_file = certs_dir.join("dev.key");
    // The key first, so the watcher never sees a certificate without its key.
    crate::secret_file::write(&key_file, key.serialize_pem().as_bytes())
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    std::fs::write(&cert_file, cert.pem()).map_err(|e| format!("{}: {e}", cert_file.display()))?;
    Ok((cert_file, names))
}
