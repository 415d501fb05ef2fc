//! A PostgreSQL cluster of a test's own (`initdb` on a free port, in a scratch directory), for
//! fault tests that change a server setting (a small `max_connections`) or stop the server:
//! the shared server is never touched. Stopped and removed on drop.

use std::path::PathBuf;
use std::process::Command;

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// The server's binaries: Debian keeps them under /usr/lib/postgresql/<version>/bin.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found
        .pop()
        .expect("PostgreSQL's server binaries (initdb, pg_ctl) under /usr/lib/postgresql")
}

/// Runs a server binary as the `postgres` user when the tests run as root (initdb refuses root).
fn as_postgres(bin: &std::path::Path, args: &[&str]) -> std::process::Output {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut cmd = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgCluster {
    /// A new cluster (trust authentication, no fsync) started with `settings` (`-c` pairs).
    pub fn start(settings: &[(&str, &str)]) -> PgCluster {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("wharf-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .ok();
        let data = dir.to_string_lossy().to_string();
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data} -c fsync=off"
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let log = format!("{data}/server.log");
        let out = as_postgres(
            &bin.join("pg_ctl"),
            &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PgCluster { dir, bin, port }
    }

    /// A streaming replica of `primary` (`pg_basebackup -R` into a directory of its own, started
    /// on a free port as a hot standby), stopped and removed on drop like any cluster.
    pub fn replica_of(primary: &PgCluster) -> PgCluster {
        let bin = primary.bin.clone();
        let dir = std::env::temp_dir().join(format!("wharf-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("replica directory");
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .ok();
        Command::new("chmod").arg("700").arg(&dir).status().ok();
        let data = dir.to_string_lossy().to_string();
        let port = primary.port.to_string();
        let out = as_postgres(
            &bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data} -c fsync=off -c hot_standby=on"
        );
        let log = format!("{data}/server.log");
        let out = as_postgres(
            &bin.join("pg_ctl"),
            &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start (replica): {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PgCluster { dir, bin, port }
    }

    /// A URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.to_string_lossy().to_string();
        as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
        );
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
