//! Certificates for tests: a CA of the test's own in a temporary directory,
//! and certificates it signs for nodes (common name `node`, valid for
//! 127.0.0.1), operators (`admin`) and clients (any other name).

use std::path::Path;
use std::path::PathBuf;

use raftkv_client::TlsFiles;
use raftkv_files::certs::write_pair;
use raftkv_files::certs::Authority;
use raftkv_files::certs::Leaf;
use tempfile::TempDir;
use tonic::transport::ClientTlsConfig;

/// A CA and the certificates issued by it, as files (removed on drop).
pub struct TestCerts {
    dir: TempDir,
    authority: Authority,
}

impl std::fmt::Debug for TestCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCerts")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TestCerts {
    /// A new CA with a `node` certificate for 127.0.0.1 and an `admin` one.
    pub fn new() -> TestCerts {
        let dir = TempDir::new().expect("temp dir");
        let authority = Authority::new("raftkv test CA", 2).expect("make a CA");
        write_pair(dir.path(), "ca", &authority.issued).expect("write the CA");
        let certs = TestCerts { dir, authority };
        certs.issue("node", "node");
        certs.issue("admin", "admin");
        certs
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// Issues a certificate with common name `common_name` (for 127.0.0.1)
    /// as `<name>.crt` / `<name>.key`; returns their paths.
    pub fn issue(&self, name: &str, common_name: &str) -> (PathBuf, PathBuf) {
        let leaf = Leaf {
            common_name: common_name.to_string(),
            ips: vec!["127.0.0.1".parse().expect("an IP")],
            dns: vec!["localhost".into()],
            days: 2,
        };
        let issued = self.authority.issue(&leaf).expect("issue a certificate");
        write_pair(self.dir(), name, &issued).expect("write a certificate")
    }

    /// The files of the certificate `name`, trusting this CA.
    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            ca: self.ca(),
            cert: self.dir().join(format!("{name}.crt")),
            key: self.dir().join(format!("{name}.key")),
            server_name: None,
        }
    }

    /// Client settings presenting the certificate `name`.
    pub fn client(&self, name: &str) -> ClientTlsConfig {
        self.files(name).load().expect("load client TLS files")
    }

    /// The node flags serving with the certificate `name`.
    pub fn node_flags(&self, name: &str) -> Vec<String> {
        let files = self.files(name);
        vec![
            "--tls-cert".into(),
            files.cert.display().to_string(),
            "--tls-key".into(),
            files.key.display().to_string(),
            "--tls-ca".into(),
            files.ca.display().to_string(),
        ]
    }

    /// The TLS flags of raft-admin and hammer presenting the certificate `name`.
    pub fn client_flags(&self, name: &str) -> Vec<String> {
        let files = self.files(name);
        vec![
            "--cacert".into(),
            files.ca.display().to_string(),
            "--cert".into(),
            files.cert.display().to_string(),
            "--key".into(),
            files.key.display().to_string(),
        ]
    }
}

impl Default for TestCerts {
    fn default() -> TestCerts {
        TestCerts::new()
    }
}
