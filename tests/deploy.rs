//! `deploy/` cannot run here (no container engine), so what can be checked
//! is checked: every `HQSYNC_…` setting the Dockerfile, compose file and
//! Kubernetes manifests set is a key hqsync knows and accepts with the value
//! given (secret placeholders replaced by valid values), and every command
//! they start is a real subcommand. (`.ci/run` also runs yamllint on them.)

use std::path::Path;

fn deploy_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != ".yamllint") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    assert!(out.len() >= 6, "deploy/ lost files: {out:?}");
    out
}

/// (`HQSYNC_X__Y`, value) pairs as written in `KEY: value`, `KEY=value` or
/// `- name: KEY` / `value: …` form.
fn settings(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(start) = line.find("HQSYNC_") else { continue };
        let rest = &line[start..];
        let key: String =
            rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        let after = rest[key.len()..].trim_start_matches([':', '=', ' ', '"']).trim_end_matches(['"', ' ', '\\']);
        let value = if after.is_empty() {
            // `- name: KEY` followed by `value: "…"`.
            lines
                .get(i + 1)
                .and_then(|l| l.trim().strip_prefix("value:"))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        } else {
            after.to_string()
        };
        out.push((key, value));
    }
    out
}

/// A valid stand-in for placeholders and `${VAR}` references.
fn usable(key: &str, value: &str) -> String {
    let placeholder = value.contains('<') || value.contains("${") || value.is_empty();
    match key {
        "HQSYNC_SECRETS__MASTER_KEY" => {
            secrecy::ExposeSecret::expose_secret(&hqsync::store::Cipher::generate_key_base64()).to_string()
        }
        "HQSYNC_ADMIN__JWT_SECRET" if placeholder => "x".repeat(40),
        "HQSYNC_STORE__URL" if placeholder => "postgres://hqsync@postgres:5432/hqsync".into(),
        "HQSYNC_QUEUE__URL" if placeholder => "amqp://hqsync:pw@rabbitmq:5672/%2f".into(),
        "HQSYNC_HTTP__PUBLIC_URL" if placeholder => "https://hqsync.example.com".into(),
        _ => value.to_string(),
    }
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's own error type
fn every_setting_in_deploy_is_a_known_key_with_a_valid_value() {
    let mut seen = 0;
    for (file, text) in deploy_files() {
        for (key, value) in settings(&text) {
            seen += 1;
            figment::Jail::expect_with(|jail| {
                jail.set_env(&key, usable(&key, &value));
                if let Err(e) = hqsync::config::Config::load(None) {
                    panic!("{file}: {key}={value:?} is refused: {e}");
                }
                Ok(())
            });
        }
    }
    assert!(seen >= 15, "only {seen} settings found: the parser missed some");
}

#[test]
fn every_command_deploy_starts_is_a_real_subcommand() {
    let mut seen = 0;
    for (file, text) in deploy_files() {
        for line in text.lines() {
            let l = line.trim();
            let list = l.strip_prefix("args:").or_else(|| l.strip_prefix("command:")).or_else(|| l.strip_prefix("CMD"));
            let Some(list) = list else { continue };
            for cmd in list.trim().trim_matches(['[', ']']).split(',').map(|s| s.trim().trim_matches('"')) {
                if cmd.is_empty() {
                    continue;
                }
                seen += 1;
                let out =
                    std::process::Command::new(env!("CARGO_BIN_EXE_hqsync")).args([cmd, "--help"]).output().unwrap();
                assert!(out.status.success(), "{file}: `hqsync {cmd}` is not a command");
            }
        }
    }
    assert!(seen >= 5, "only {seen} commands found");
}
