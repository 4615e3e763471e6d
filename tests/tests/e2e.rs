//! End-to-end tests: the docker CLI and (later) our binaries against real daemons from
//! `vch-testbed`. Every test fails, never skips, when a component is missing.

mod smoke {
    use vch_testbed::{Dockerd, TestImage};

    /// The docker CLI first in `PATH` (a newer client than dockerd 20.10) negotiates the API
    /// version down and runs a container over dockerd's TCP listener.
    #[test]
    fn docker_cli_over_tcp_runs_a_container() {
        let dockerd = Dockerd::builder().tcp_listener().start().unwrap();
        let image = TestImage::busybox(&dockerd).unwrap();
        let host = format!("tcp://{}", dockerd.tcp_addr().unwrap());
        let docker = |args: &[&str]| {
            let out = std::process::Command::new("docker")
                .env("DOCKER_HOST", &host)
                .env("DOCKER_CONFIG", dockerd.docker_config_dir())
                .env_remove("DOCKER_CONTEXT")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let api = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
        assert!(api.trim().starts_with("1."), "server API version {api:?}");
        let out = docker(&["run", "--rm", &image, "sh", "-c", "echo $((6 * 7))"]);
        assert_eq!(out, "42\n");
    }
}
