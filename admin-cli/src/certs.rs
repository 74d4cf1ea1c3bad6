//! `raft-admin certs`: a CA and the certificates it signs, so a small
//! cluster gets mutual TLS in two commands.

use anyhow::bail;
use anyhow::Context;
use raftkv_files::certs::write_pair;
use raftkv_files::certs::Authority;
use raftkv_files::certs::Leaf;

use crate::cli::CertsCommand;

/// Runs one `certs` command; prints the files written.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Ca { dir, cn, days } => {
            let ca = Authority::new(&cn, days).context("cannot make the CA")?;
            let (cert, key) = write_pair(&dir, "ca", &ca.issued)?;
            println!(
                "wrote CA {cn:?}: {} and {} (keep the key safe)",
                cert.display(),
                key.display()
            );
        }
        CertsCommand::Issue {
            cn,
            ips,
            dns,
            name,
            dir,
            ca_cert,
            ca_key,
            days,
        } => {
            if cn.is_empty() {
                bail!("--cn must not be empty");
            }
            let name = name.unwrap_or_else(|| cn.clone());
            if name.is_empty() || name.contains('/') || name == "ca" {
                bail!("--name {name:?} is not usable as a file name (nor may it be \"ca\")");
            }
            let ca_cert = ca_cert.unwrap_or_else(|| dir.join("ca.crt"));
            let ca_key = ca_key.unwrap_or_else(|| dir.join("ca.key"));
            let ca = Authority::load(&ca_cert, &ca_key).with_context(|| {
                format!(
                    "cannot load the CA from {} and {} (make one with `raft-admin certs ca`)",
                    ca_cert.display(),
                    ca_key.display()
                )
            })?;
            let leaf = Leaf {
                common_name: cn.clone(),
                ips: ips.clone(),
                dns: dns.clone(),
                days,
            };
            let issued = ca.issue(&leaf).context("cannot make the certificate")?;
            let (cert, key) = write_pair(&dir, &name, &issued)?;
            let names: Vec<String> = ips
                .iter()
                .map(ToString::to_string)
                .chain(dns.iter().cloned())
                .collect();
            println!(
                "wrote {cn:?} certificate {} and key {}{}",
                cert.display(),
                key.display(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", names.join(", "))
                }
            );
        }
    }
    Ok(())
}
