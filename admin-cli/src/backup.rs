//! `backup FILE`: a consistent copy of the cluster's key-value state, from
//! the leader, in the backup file format (`raftkv_files::backup`) that
//! `raftkv-node restore` reads.
//!
//! The file appears under its name only when complete: it is written beside
//! it under a temporary name, checked against the checksum the leader sent,
//! synced, read back and verified, then linked into place (which never
//! replaces an existing file). A failed backup leaves nothing behind.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use raftkv_files::backup::BackupWriter;
use raftkv_files::backup::DataHash;
use raftkv_proto::pb;
use raftkv_proto::pb::backup_chunk::Part;
use serde_json::json;

use crate::configuration::members_json;
use crate::configuration::suffrage_name;
use crate::target::Target;

/// The least time a backup gets, whatever `--timeout` says: the leader builds
/// a snapshot first, and a large one takes a while to stream.
const BACKUP_PATIENCE: Duration = Duration::from_secs(300);

/// backup FILE.
pub async fn backup(target: &mut Target, file: &Path) -> anyhow::Result<()> {
    if file.exists() {
        bail!(
            "{} exists; give a new file name (a backup never overwrites a file)",
            file.display()
        );
    }
    let partial = partial_name(file)?;
    let written = download(target, &partial).await;
    let written = written.and_then(|header| {
        // Read back what is on disk: the file that counts is the one written.
        let verified = raftkv_files::backup::read_file(&partial)
            .with_context(|| format!("reading back {}", partial.display()))?;
        std::fs::hard_link(&partial, file)
            .with_context(|| format!("cannot create {}", file.display()))?;
        // The new name is durable too, not only the data.
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
        File::open(parent.unwrap_or(Path::new(".")))
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing the directory of {}", file.display()))?;
        Ok((header, verified.sha256))
    });
    let _ = std::fs::remove_file(&partial);
    let (header, sha256) = written?;
    let file_bytes = std::fs::metadata(file)?.len();
    let configuration = header.configuration.unwrap_or_default();
    let sha256 = raftkv_files::backup::hex(&sha256);
    if target.json {
        println!(
            "{}",
            json!({
                "file": file.display().to_string(),
                "index": header.index,
                "term": header.term,
                "key_count": header.key_count,
                "data_bytes": header.data_bytes,
                "file_bytes": file_bytes,
                "sha256": sha256,
                "source_node_id": header.source_node_id,
                "configuration": members_json(&configuration),
            })
        );
        return Ok(());
    }
    println!(
        "wrote {}: {} keys at index {} (term {}), {} bytes, from node {}",
        file.display(),
        header.key_count,
        header.index,
        header.term,
        file_bytes,
        header.source_node_id
    );
    let members: Vec<String> = configuration
        .members
        .iter()
        .map(|m| format!("{} {} ({})", m.id, m.address, suffrage_name(m.suffrage)))
        .collect();
    println!("members then: {}", members.join(", "));
    println!("sha256 {sha256}");
    Ok(())
}

/// Streams the backup from the leader into `partial`; returns its header.
async fn download(target: &mut Target, partial: &Path) -> anyhow::Result<pb::BackupHeader> {
    let mut stream = target
        .patiently(BACKUP_PATIENCE)
        .await?
        .backup()
        .await
        .context("asking the leader for a backup")?;
    // A file of this name is left over from a backup that failed: ours.
    let out =
        File::create(partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let header = match stream.message().await? {
        Some(pb::BackupChunk {
            part: Some(Part::Header(header)),
        }) => header,
        _ => bail!("the node's answer does not start with a backup header"),
    };
    let mut writer = BackupWriter::new(BufWriter::new(out), &header)?;
    let mut data_sum = DataHash::default();
    let sent_sum = loop {
        match stream.message().await? {
            Some(pb::BackupChunk {
                part: Some(Part::Data(data)),
            }) => {
                writer.write_data(&data)?;
                data_sum.update(&data);
            }
            Some(pb::BackupChunk {
                part: Some(Part::DataSha256(sum)),
            }) => break sum,
            Some(_) => bail!("unexpected message in the backup stream"),
            None => bail!("the backup stream ended before its checksum"),
        }
    };
    if sent_sum[..] != data_sum.finish()[..] {
        bail!("the data received does not match the checksum the node sent");
    }
    let (_, out) = writer.finish()?;
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("syncing the backup to disk")?;
    Ok(header)
}

/// `FILE.partial`, beside it.
fn partial_name(file: &Path) -> anyhow::Result<PathBuf> {
    let Some(name) = file.file_name() else {
        bail!("{}: not a file name", file.display());
    };
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(file.with_file_name(partial))
}
