//! Go-style flags (`-flag`, `--flag`, `-flag=value`, `-flag value`), as the original DinV's
//! `flag` package parsed them, and its usage text.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Exit code of a command-line error, as Go's `flag.ExitOnError`.
pub const EXIT_USAGE: u8 = 2;

/// The default storage driver.
pub const DEFAULT_STORAGE: &str = "overlay2";
/// The default certificate directory.
pub const DEFAULT_CERTS: &str = "/certs";
/// The default dockerd program (looked up in `PATH`).
pub const DEFAULT_DOCKERD: &str = "dockerd";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// `-tls`: serve TLS (implied by `-tlsverify`).
    pub tls: bool,
    /// `-tlsverify`: serve TLS and require client certificates from the CA.
    pub tlsverify: bool,
    /// `-local`: no TCP listener.
    pub local: bool,
    /// `-storage`: dockerd's `--storage-driver`.
    pub storage: String,
    /// `-insecure-registry`, every occurrence in order.
    pub insecure_registries: Vec<String>,
    /// `-vic-ip`: the address (or name) the server certificate is for.
    pub vic_ip: Option<String>,
    /// `-certs`: where the TLS material is read and written.
    pub certs: PathBuf,
    /// `-dockerd`: the dockerd program.
    pub dockerd: PathBuf,
    /// `-whitelist-registry`, every occurrence in order.
    pub whitelist_registries: Vec<String>,
    /// `-port`: the TCP port (extension; default 2375, or 2376 with TLS).
    pub port: Option<u16>,
    /// Arguments after the flags (after `--`, or from the first non-flag argument): appended to
    /// dockerd's command line.
    pub extra: Vec<String>,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            tls: false,
            tlsverify: false,
            local: false,
            storage: DEFAULT_STORAGE.to_owned(),
            insecure_registries: Vec::new(),
            vic_ip: None,
            certs: PathBuf::from(DEFAULT_CERTS),
            dockerd: PathBuf::from(DEFAULT_DOCKERD),
            whitelist_registries: Vec::new(),
            port: None,
            extra: Vec::new(),
        }
    }
}

impl Flags {
    /// Whether the TCP listener serves TLS (`-tls` or `-tlsverify`).
    pub fn uses_tls(&self) -> bool {
        self.tls || self.tlsverify
    }

    /// The TCP port: `-port`, else 2376 with TLS, else 2375.
    pub fn tcp_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.uses_tls() { 2376 } else { 2375 })
    }
}

/// The outcome of parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Run with these flags.
    Run(Flags),
    /// `-h` or `-help`: print the usage, exit 0.
    Help,
}

/// A command-line error; the message is Go's (`flag provided but not defined: -x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    /// A string flag; the help's back-quoted word names its value.
    Str,
    /// A repeatable string flag (Go's `flag.Value`).
    List,
    Port,
}

struct Spec {
    name: &'static str,
    kind: Kind,
    /// Go usage text: a back-quoted word becomes the value's name.
    help: &'static str,
    /// Shown as ` (default "…")` when set.
    default: Option<&'static str>,
}

/// Every flag, sorted by name as Go's `PrintDefaults` lists them.
const SPECS: &[Spec] = &[
    Spec {
        name: "certs",
        kind: Kind::Str,
        help: "`directory` of the TLS material: ca.crt, ca-key.pem, docker.crt, docker.key, \
               docker-client.crt, docker-client.key (missing files are generated, existing ones \
               never overwritten)",
        default: Some(DEFAULT_CERTS),
    },
    Spec {
        name: "dockerd",
        kind: Kind::Str,
        help: "`path` of the dockerd program",
        default: Some(DEFAULT_DOCKERD),
    },
    Spec {
        name: "insecure-registry",
        kind: Kind::List,
        help: "Enable insecure `registry` communication (repeatable)",
        default: None,
    },
    Spec {
        name: "local",
        kind: Kind::Bool,
        help: "Do not bind the API to a TCP port, only to unix:///var/run/docker.sock",
        default: None,
    },
    Spec {
        name: "port",
        kind: Kind::Port,
        help: "TCP `port` of the API (extension; default 2375, 2376 with TLS)",
        default: None,
    },
    Spec {
        name: "storage",
        kind: Kind::Str,
        help: "Storage `driver` to use",
        default: Some(DEFAULT_STORAGE),
    },
    Spec {
        name: "tls",
        kind: Kind::Bool,
        help: "Use TLS; implied by -tlsverify",
        default: None,
    },
    Spec {
        name: "tlsverify",
        kind: Kind::Bool,
        help: "Use TLS and verify the remote",
        default: None,
    },
    Spec {
        name: "vic-ip",
        kind: Kind::Str,
        help: "`address` (IP or name) the server certificate is for (default: the host's \
               addresses)",
        default: None,
    },
    Spec {
        name: "whitelist-registry",
        kind: Kind::List,
        help: "Serve the TCP port through the VCH policy endpoint, allowing only this \
               `registry` (repeatable; extension)",
        default: None,
    },
];

/// Go's `UnquoteUsage`: the back-quoted word and the text without the quotes.
fn unquote(spec: &Spec) -> (&'static str, String) {
    let help = spec.help;
    if let Some(start) = help.find('`')
        && let Some(len) = help[start + 1..].find('`')
    {
        let name = &help[start + 1..start + 1 + len];
        let text = format!("{}{}{}", &help[..start], name, &help[start + 2 + len..]);
        return (name, text);
    }
    let name = match spec.kind {
        Kind::Bool => "",
        Kind::Str => "string",
        Kind::List => "value",
        Kind::Port => "uint",
    };
    (name, help.to_owned())
}

/// The usage text, in the form of Go's `flag.Usage`: `Usage of PROGRAM:`, then each flag.
pub fn usage(program: &str) -> String {
    let mut out = format!("Usage of {program}:\n");
    for spec in SPECS {
        let (name, text) = unquote(spec);
        let mut line = format!("  -{}", spec.name);
        if !name.is_empty() {
            line.push(' ');
            line.push_str(name);
        }
        // Go puts a short flag's help on the same line.
        line.push_str(if line.len() <= 4 { "\t" } else { "\n    \t" });
        line.push_str(&text.replace('\n', "\n    \t"));
        if let Some(default) = spec.default {
            let _ = write!(line, " (default {default:?})");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(
        "Arguments after the flags (after --, or from the first one that is not a flag) are \
         passed to dockerd.\n",
    );
    out
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Parses the arguments after the program name, as Go's `flag.Parse` does: flags stop at `--`
/// (dropped) or at the first argument that is not a flag (kept); both `-` and `--` prefixes
/// work; a bool flag takes a value only as `-flag=value`.
pub fn parse<I, S>(args: I) -> Result<Parsed, FlagError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut flags = Flags::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        if arg.len() < 2 || !arg.starts_with('-') {
            flags.extra.push(arg);
            break;
        }
        let mut body = &arg[1..];
        if let Some(rest) = body.strip_prefix('-') {
            if rest.is_empty() {
                break; // "--" ends the flags.
            }
            body = rest;
        }
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
            if name == "h" || name == "help" {
                return Ok(Parsed::Help);
            }
            return Err(FlagError(format!("flag provided but not defined: -{name}")));
        };
        if let Kind::Bool = spec.kind {
            let value = match inline {
                None => true,
                Some(v) => parse_bool(&v).ok_or_else(|| {
                    FlagError(format!(
                        "invalid boolean value {v:?} for -{name}: parse error"
                    ))
                })?,
            };
            match name {
                "tls" => flags.tls = value,
                "tlsverify" => flags.tlsverify = value,
                _ => flags.local = value,
            }
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| FlagError(format!("flag needs an argument: -{name}")))?,
        };
        match name {
            "certs" => flags.certs = PathBuf::from(value),
            "dockerd" => flags.dockerd = PathBuf::from(value),
            "storage" => flags.storage = value,
            "vic-ip" => flags.vic_ip = Some(value),
            "insecure-registry" => flags.insecure_registries.push(value),
            "whitelist-registry" => flags.whitelist_registries.push(value),
            _ => {
                let port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        FlagError(format!(
                            "invalid value {value:?} for flag -{name}: not a port number"
                        ))
                    })?;
                flags.port = Some(port);
            }
        }
    }
    flags.extra.extend(args);
    Ok(Parsed::Run(flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Flags {
        match parse(args.iter().copied()) {
            Ok(Parsed::Run(flags)) => flags,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        match parse(args.iter().copied()) {
            Err(e) => e.0,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let f = run(&[]);
        assert_eq!(f, Flags::default());
        assert_eq!(f.storage, "overlay2");
        assert_eq!(f.certs, PathBuf::from("/certs"));
        assert_eq!(f.tcp_port(), 2375);
    }

    #[test]
    fn every_spelling_of_a_flag() {
        for args in [
            &["-storage", "vfs"][..],
            &["-storage=vfs"],
            &["--storage", "vfs"],
            &["--storage=vfs"],
        ] {
            assert_eq!(run(args).storage, "vfs", "{args:?}");
        }
        for args in [&["-tls"][..], &["--tls"], &["-tls=true"], &["-tls=1"]] {
            assert!(run(args).tls, "{args:?}");
        }
        assert!(!run(&["-tls", "-tls=false"]).tls);
    }

    #[test]
    fn tlsverify_implies_tls_and_ports_follow() {
        let f = run(&["-tlsverify"]);
        assert!(f.uses_tls() && !f.tls);
        assert_eq!(f.tcp_port(), 2376);
        assert_eq!(run(&["-tls"]).tcp_port(), 2376);
        assert_eq!(run(&["-tls", "-port", "4000"]).tcp_port(), 4000);
    }

    /// The original kept only the last `-insecure-registry`.
    #[test]
    fn repeated_lists_keep_every_value() {
        let f = run(&[
            "-insecure-registry",
            "a:5000",
            "--insecure-registry=b",
            "-whitelist-registry",
            "c",
            "-whitelist-registry=d",
        ]);
        assert_eq!(f.insecure_registries, ["a:5000", "b"]);
        assert_eq!(f.whitelist_registries, ["c", "d"]);
    }

    #[test]
    fn extra_arguments_after_double_dash_or_first_non_flag() {
        let f = run(&["-local", "--", "--data-root", "/x", "-tls"]);
        assert!(f.local && !f.tls);
        assert_eq!(f.extra, ["--data-root", "/x", "-tls"]);
        let f = run(&["-local", "run", "-tls"]);
        assert_eq!(f.extra, ["run", "-tls"]);
        // A lone "-" is an argument, as in Go.
        assert_eq!(run(&["-", "-tls"]).extra, ["-", "-tls"]);
        // A bool flag does not take the next argument.
        assert_eq!(run(&["-tls", "false"]).extra, ["false"]);
    }

    #[test]
    fn help_and_errors() {
        for h in ["-h", "-help", "--h", "--help"] {
            assert_eq!(parse([h]), Ok(Parsed::Help), "{h}");
        }
        assert_eq!(err(&["-nope"]), "flag provided but not defined: -nope");
        assert_eq!(err(&["-storage"]), "flag needs an argument: -storage");
        assert_eq!(err(&["---tls"]), "bad flag syntax: ---tls");
        assert_eq!(err(&["-=x"]), "bad flag syntax: -=x");
        assert_eq!(
            err(&["-tls=maybe"]),
            "invalid boolean value \"maybe\" for -tls: parse error"
        );
        assert!(err(&["-port", "0"]).contains("not a port number"));
        // An error after a help flag is not reached.
        assert_eq!(parse(["-h", "-nope"]), Ok(Parsed::Help));
    }

    #[test]
    fn usage_has_go_form() {
        let text = usage("/dinv");
        assert!(text.starts_with("Usage of /dinv:\n  -certs directory\n    \t"));
        assert!(text.contains("  -tls\n    \tUse TLS; implied by -tlsverify\n"));
        assert!(
            text.contains(
                "  -storage driver\n    \tStorage driver to use (default \"overlay2\")\n"
            )
        );
        assert!(text.contains("  -insecure-registry registry\n"));
        for spec in SPECS {
            assert!(
                text.contains(&format!("  -{} ", spec.name))
                    || text.contains(&format!("  -{}\n", spec.name))
            );
        }
        let mut names: Vec<_> = SPECS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        assert_eq!(names, SPECS.iter().map(|s| s.name).collect::<Vec<_>>());
    }
}
