//! A registry of a test's own that asks for a login (Debian's docker-registry with htpasswd),
//! for the tests of registry credentials (the node's and a pod's imagePullSecrets).
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// A registry of the test's own that asks for a login (htpasswd, bcrypt), on loopback.
pub struct AuthRegistry {
    pub addr: String,
    child: Child,
}

impl AuthRegistry {
    pub fn start(dir: &Path, user: &str, password: &str) -> AuthRegistry {
        std::fs::create_dir_all(dir).unwrap();
        // Debian's Python (its crypt has bcrypt through libxcrypt)
        let hash = Command::new("/usr/bin/python3")
            .args(["-W", "ignore", "-c"])
            .arg("import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))")
            .arg(password)
            .output()
            .unwrap();
        assert!(hash.status.success(), "bcrypt: {hash:?}");
        let htpasswd = dir.join("htpasswd");
        let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
        let addr = format!("127.0.0.1:{}", super::free_port());
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp: {{addr: {addr}}}\nauth:\n  htpasswd: {{realm: dsa-test, path: {}}}\n",
                dir.join("storage").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker-registry");
        let url = format!("http://{addr}/v2/");
        wait_for(
            "the registry to ask for a login",
            Duration::from_secs(20),
            || {
                let out = Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                    .output()
                    .ok()?;
                (out.stdout == b"401").then_some(())
            },
        );
        AuthRegistry { addr, child }
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
