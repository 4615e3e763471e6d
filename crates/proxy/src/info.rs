//! The registry policy in `GET /info`, as a VCH showed it: `docker info` then answers "where may
//! I pull from?" with no admin to ask.
//!
//! The docker CLI prints `Labels` one per line and lists `RegistryConfig`'s insecure index
//! configurations and CIDRs under "Insecure Registries", so the policy goes there:
//!
//! | label | value |
//! |---|---|
//! | `vch.registry.whitelist-mode` | `enabled` or `disabled` |
//! | `vch.registry.policy-mode` | `enforce` or `audit` |
//! | `vch.registry.whitelist` | one label per whitelist entry in force |
//! | `vch.registry.insecure` | one label per insecure-registry entry |
//! | `vch.registry.push` | one label per push-list entry; `none` when pushes are refused; absent without a push list (the whitelist decides pushes) |
//! | `vch.registry.narrowed` | `true` when `vch-admin update` narrowed the lists |
//! | `vch.registry.project` | the calling client's project (its certificate's OU); absent without one |
//! | `vch.registry.project-whitelist` | one label per entry in force for the caller's project (its list inside the whitelist); `none` when nothing is |

use serde_json::{Map, Value};
use vch_policy::{EntryHost, PushRule};

use crate::settings::{Scope, Settings};

/// Adds the policy to a decoded `/info` answer. Fields dockerd filled are kept; ours are added.
pub(crate) fn add_policy(info: &mut Value, settings: &Settings, scope: &Scope) {
    let Some(info) = info.as_object_mut() else {
        return;
    };
    let policy = &settings.policy;
    let mut labels = vec![
        label(
            "whitelist-mode",
            if policy.whitelist_mode() {
                "enabled"
            } else {
                "disabled"
            },
        ),
        label("policy-mode", settings.mode.as_str()),
    ];
    labels.extend(
        policy
            .whitelist()
            .iter()
            .map(|e| label("whitelist", e.as_str())),
    );
    labels.extend(
        policy
            .insecure()
            .iter()
            .map(|e| label("insecure", e.as_str())),
    );
    match &settings.push {
        PushRule::SameAsPull => {}
        PushRule::Nowhere => labels.push(label("push", "none")),
        PushRule::List(push) => {
            labels.extend(push.whitelist().iter().map(|e| label("push", e.as_str())));
        }
    }
    if settings.narrowed {
        labels.push(label("narrowed", "true"));
    }
    match scope {
        Scope::Vch => {}
        Scope::Project(project) => {
            labels.push(label("project", project.name()));
            if project.effective().is_empty() {
                labels.push(label("project-whitelist", "none"));
            }
            labels.extend(
                project
                    .effective()
                    .iter()
                    .map(|e| label("project-whitelist", e.as_str())),
            );
        }
        Scope::Unknown(name) => {
            labels.push(label("project", name));
            labels.push(label("project-whitelist", "none"));
        }
    }
    match info.get_mut("Labels").and_then(Value::as_array_mut) {
        Some(existing) => existing.extend(labels),
        None => {
            info.insert("Labels".into(), Value::Array(labels));
        }
    }

    if policy.insecure().is_empty() {
        return;
    }
    let registry = info
        .entry("RegistryConfig")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(registry) = registry.as_object_mut() else {
        return;
    };
    for entry in policy.insecure() {
        match entry.host() {
            EntryHost::Cidr(net) => push_unique(
                registry,
                "InsecureRegistryCIDRs",
                Value::String(net.to_string()),
            ),
            _ => {
                let configs = registry
                    .entry("IndexConfigs")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(configs) = configs.as_object_mut() {
                    configs.insert(
                        entry.as_str().to_owned(),
                        serde_json::json!({
                            "Name": entry.as_str(),
                            "Mirrors": [],
                            "Secure": false,
                            "Official": false,
                        }),
                    );
                }
            }
        }
    }
}

fn label(key: &str, value: &str) -> Value {
    Value::String(format!("vch.registry.{key}={value}"))
}

fn push_unique(object: &mut Map<String, Value>, key: &str, value: Value) {
    let list = object
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    if let Some(list) = list.as_array_mut()
        && !list.contains(&value)
    {
        list.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstream;
    use vch_policy::{PolicyBuilder, RegistryRules};

    #[test]
    fn the_policy_is_in_labels_and_insecure_registries() {
        let pull = PolicyBuilder::new()
            .whitelist("reg.example.com:5000")
            .whitelist("*.example.org")
            .insecure("10.1.0.0/16")
            .insecure("insecure.example.com")
            .build()
            .unwrap();
        let push = PolicyBuilder::new()
            .whitelist("reg.example.com:5000")
            .build()
            .unwrap();
        let upstream = Upstream::parse("unix:///var/run/docker.sock", None).unwrap();
        let settings =
            Settings::new(upstream, vch_policy::Policy::empty()).with_rules(RegistryRules {
                pull,
                push: PushRule::List(push),
                ..RegistryRules::default()
            });
        let mut info = serde_json::json!({
            "Labels": ["a=b"],
            "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {"docker.io": {"Name": "docker.io", "Secure": true}}},
        });
        add_policy(&mut info, &settings, &Scope::Vch);
        let labels: Vec<&str> = info["Labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            labels,
            [
                "a=b",
                "vch.registry.whitelist-mode=enabled",
                "vch.registry.policy-mode=enforce",
                "vch.registry.whitelist=reg.example.com:5000",
                "vch.registry.whitelist=*.example.org",
                "vch.registry.insecure=10.1.0.0/16",
                "vch.registry.insecure=insecure.example.com",
                "vch.registry.push=reg.example.com:5000",
            ]
        );
        assert_eq!(
            info["RegistryConfig"]["InsecureRegistryCIDRs"],
            serde_json::json!(["127.0.0.0/8", "10.1.0.0/16"])
        );
        assert_eq!(
            info["RegistryConfig"]["IndexConfigs"]["insecure.example.com"]["Secure"],
            false
        );
        assert_eq!(
            info["RegistryConfig"]["IndexConfigs"]["docker.io"]["Secure"],
            true
        );

        // Whitelist mode off, no push list: two labels, nothing else touched.
        let upstream = Upstream::parse("unix:///var/run/docker.sock", None).unwrap();
        let open = Settings::new(upstream, vch_policy::Policy::empty());
        let mut info = serde_json::json!({"Name": "x"});
        add_policy(&mut info, &open, &Scope::Vch);
        assert_eq!(
            info,
            serde_json::json!({"Name": "x", "Labels": [
                "vch.registry.whitelist-mode=disabled",
                "vch.registry.policy-mode=enforce",
            ]})
        );
    }

    #[test]
    fn the_callers_project_and_its_list_in_force_are_labels() {
        let upstream = Upstream::parse("unix:///var/run/docker.sock", None).unwrap();
        let pull = PolicyBuilder::new()
            .whitelist("reg.example.com")
            .whitelist("other.example.com")
            .build()
            .unwrap();
        let list = PolicyBuilder::new()
            .whitelist("reg.example.com/team-a")
            .whitelist("elsewhere.example.net")
            .build()
            .unwrap();
        let settings = Settings::new(upstream, vch_policy::Policy::empty())
            .with_rules(RegistryRules {
                pull,
                ..RegistryRules::default()
            })
            .with_project("a", list);
        let scope = settings.scope(Some(&std::sync::Arc::from("a")));
        let mut info = serde_json::json!({});
        add_policy(&mut info, &settings, &scope);
        let labels = info["Labels"].as_array().unwrap();
        let project: Vec<&str> = labels
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|l| l.starts_with("vch.registry.project"))
            .collect();
        assert_eq!(
            project,
            [
                "vch.registry.project=a",
                "vch.registry.project-whitelist=reg.example.com/team-a",
            ]
        );
        let scope = settings.scope(Some(&std::sync::Arc::from("gone")));
        let mut info = serde_json::json!({});
        add_policy(&mut info, &settings, &scope);
        let labels = info["Labels"].as_array().unwrap();
        assert!(labels.contains(&Value::from("vch.registry.project=gone")));
        assert!(labels.contains(&Value::from("vch.registry.project-whitelist=none")));
    }
}
