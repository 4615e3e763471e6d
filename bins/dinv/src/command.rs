//! dockerd's command line.

use crate::certs::TlsFiles;
use crate::flags::Flags;

/// The unix socket dockerd serves when the extra arguments name none.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// The `unix://` hosts given through the extra arguments (`-H X`, `-H=X`, `-HX`, `--host X`,
/// `--host=X`).
pub fn extra_unix_sockets(extra: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-H" | "--host" => args.next().map(String::as_str),
            a => a
                .strip_prefix("--host=")
                .or_else(|| a.strip_prefix("-H="))
                .or_else(|| a.strip_prefix("-H")),
        };
        if let Some(v) = value.filter(|v| v.starts_with("unix://")) {
            out.push(v.to_owned());
        }
    }
    out
}

/// The unix socket dinv relies on (the policy front forwards to it): the first one the extra
/// arguments give, else [`DEFAULT_SOCKET`].
pub fn engine_socket(flags: &Flags) -> String {
    extra_unix_sockets(&flags.extra)
        .into_iter()
        .next()
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned())
}

/// dockerd's arguments, in this order: `--log-level debug` (with `DEBUG`), the TLS flags
/// (`--tlsverify`, or `--tls --tlsverify=false`, then `--tlscacert= --tlscert= --tlskey=`: dockerd 20.10 reads a CA
/// file even with `--tls` alone, see [`TlsFiles::ca`]),
/// `-H tcp://0.0.0.0:PORT` (not with `-local`), `-H unix:///var/run/docker.sock` (unless the
/// extra arguments name a unix socket), `--storage-driver=`, one `--insecure-registry=` per
/// flag, then the extra arguments.
///
/// With a policy front (`front`), dockerd gets neither TLS nor TCP: the front serves the port.
pub fn dockerd_args(
    flags: &Flags,
    tls: Option<&TlsFiles>,
    debug: bool,
    front: bool,
) -> Vec<String> {
    let mut args = Vec::new();
    if debug {
        args.extend(["--log-level".to_owned(), "debug".to_owned()]);
    }
    if !front {
        if let Some(files) = tls {
            if files.verify {
                args.push("--tlsverify".to_owned());
            } else {
                // dockerd 20.10 turns verification on for `--tls` alone (seen here: clients
                // without a certificate get "bad certificate"); say it is off.
                args.extend(["--tls".to_owned(), "--tlsverify=false".to_owned()]);
            }
            args.push(format!("--tlscacert={}", files.ca.display()));
            args.push(format!("--tlscert={}", files.cert.display()));
            args.push(format!("--tlskey={}", files.key.display()));
        }
        if !flags.local {
            args.extend([
                "-H".to_owned(),
                format!("tcp://0.0.0.0:{}", flags.tcp_port()),
            ]);
        }
    }
    if extra_unix_sockets(&flags.extra).is_empty() {
        args.extend(["-H".to_owned(), DEFAULT_SOCKET.to_owned()]);
    }
    args.push(format!("--storage-driver={}", flags.storage));
    for r in &flags.insecure_registries {
        args.push(format!("--insecure-registry={r}"));
    }
    args.extend(flags.extra.iter().cloned());
    args
}

/// A command line for printing, each word quoted for a POSIX shell when it needs it.
pub fn display(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(vch_pki::shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn files(verify: bool) -> TlsFiles {
        TlsFiles {
            verify,
            ca: PathBuf::from("/certs/ca.crt"),
            cert: PathBuf::from("/certs/docker.crt"),
            key: PathBuf::from("/certs/docker.key"),
        }
    }

    #[test]
    fn plain() {
        let flags = Flags::default();
        assert_eq!(
            dockerd_args(&flags, None, false, false).join(" "),
            "-H tcp://0.0.0.0:2375 -H unix:///var/run/docker.sock --storage-driver=overlay2"
        );
    }

    #[test]
    fn tls_modes() {
        let flags = Flags {
            tlsverify: true,
            insecure_registries: vec!["a:5000".into(), "b".into()],
            ..Flags::default()
        };
        assert_eq!(
            dockerd_args(&flags, Some(&files(true)), true, false).join(" "),
            "--log-level debug --tlsverify --tlscacert=/certs/ca.crt \
             --tlscert=/certs/docker.crt --tlskey=/certs/docker.key -H tcp://0.0.0.0:2376 \
             -H unix:///var/run/docker.sock --storage-driver=overlay2 \
             --insecure-registry=a:5000 --insecure-registry=b"
        );
        let flags = Flags {
            tls: true,
            port: Some(4000),
            ..Flags::default()
        };
        assert_eq!(
            dockerd_args(&flags, Some(&files(false)), false, false).join(" "),
            "--tls --tlsverify=false --tlscacert=/certs/ca.crt --tlscert=/certs/docker.crt --tlskey=/certs/docker.key \
             -H tcp://0.0.0.0:4000 \
             -H unix:///var/run/docker.sock --storage-driver=overlay2"
        );
    }

    #[test]
    fn local_and_a_socket_from_extra_arguments() {
        let flags = Flags {
            local: true,
            storage: "vfs".into(),
            extra: vec![
                "--data-root".into(),
                "/d".into(),
                "-H".into(),
                "unix:///t/s".into(),
            ],
            ..Flags::default()
        };
        assert_eq!(
            dockerd_args(&flags, None, false, false).join(" "),
            "--storage-driver=vfs --data-root /d -H unix:///t/s"
        );
        assert_eq!(engine_socket(&flags), "unix:///t/s");
        for spelling in [
            &["--host", "unix:///x"][..],
            &["--host=unix:///x"],
            &["-H=unix:///x"],
            &["-Hunix:///x"],
        ] {
            let extra: Vec<String> = spelling.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(extra_unix_sockets(&extra), ["unix:///x"], "{spelling:?}");
        }
        assert!(extra_unix_sockets(&["-H".into(), "tcp://1.2.3.4:1".into()]).is_empty());
        assert_eq!(engine_socket(&Flags::default()), DEFAULT_SOCKET);
    }

    #[test]
    fn a_policy_front_takes_tls_and_tcp_from_dockerd() {
        let flags = Flags {
            tlsverify: true,
            whitelist_registries: vec!["r".into()],
            ..Flags::default()
        };
        assert_eq!(
            dockerd_args(&flags, Some(&files(true)), false, true).join(" "),
            "-H unix:///var/run/docker.sock --storage-driver=overlay2"
        );
    }

    #[test]
    fn display_quotes() {
        assert_eq!(
            display("dockerd", &["--label=a b".into(), "-H".into()]),
            "dockerd '--label=a b' -H"
        );
    }
}
