//! The layering, checked where a check is cheap: the service knows nothing of HTTP or the wire
//! types, and no HTTP handler reaches the store past the service.

use std::path::{Path, PathBuf};

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .join(name)
}

fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = std::fs::read_dir(&directory)
            .unwrap_or_else(|error| panic!("list {}: {error}", directory.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The identifiers of a line of code.
fn identifiers(line: &str) -> impl Iterator<Item = &str> {
    line.split(|character: char| !(character.is_alphanumeric() || character == '_'))
        .filter(|word| !word.is_empty())
}

/// `line` without the text of its string literals (a header value such as `no-store` names
/// nothing in the code).
fn without_strings(line: &str) -> String {
    let mut code = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    for character in line.chars() {
        if in_string {
            match (escaped, character) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
        } else if character == '"' {
            in_string = true;
        } else {
            code.push(character);
        }
    }
    code
}

/// The code of a file without its comments (a comment may name anything).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    text.lines()
        .map(|line| match line.find("//") {
            Some(start) => &line[..start],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_service_depends_on_no_front_end_crate() {
    let manifest = std::fs::read_to_string(crate_dir("muster-service").join("Cargo.toml"))
        .expect("read the service's manifest");
    let dependencies = manifest
        .split("[dev-dependencies]")
        .next()
        .expect("the manifest's first part");
    for front_end in [
        "axum",
        "hyper",
        "tonic",
        "tower",
        "muster-api",
        "muster-server",
        "muster-grpc",
        "reqwest",
    ] {
        let named = dependencies.lines().any(|line| {
            let name = line.split(['.', ' ', '=']).next().unwrap_or("");
            name == front_end && line.contains('=')
        });
        assert!(!named, "muster-service must not depend on {front_end}");
    }
    for file in rust_files(&crate_dir("muster-service").join("src")) {
        let code = code_of(&file);
        for name in ["axum", "hyper", "tonic", "muster_api", "StatusCode"] {
            assert!(
                !code.contains(name),
                "{} names {name}: the service knows nothing of front ends",
                file.display()
            );
        }
    }
}

#[test]
fn no_http_handler_names_the_store() {
    handlers_reach_the_store_only_through_the_service(
        &crate_dir("muster-server").join("src").join("routes"),
    );
}

#[test]
fn no_grpc_handler_names_the_store() {
    handlers_reach_the_store_only_through_the_service(&crate_dir("muster-grpc").join("src"));
    let manifest = std::fs::read_to_string(crate_dir("muster-grpc").join("Cargo.toml"))
        .expect("read the gRPC front end's manifest");
    assert!(
        !manifest.contains("muster-store"),
        "muster-grpc reaches the store only through the service"
    );
}

fn handlers_reach_the_store_only_through_the_service(routes: &std::path::Path) {
    let files = rust_files(routes);
    assert!(
        !files.is_empty(),
        "the handlers are in {}",
        routes.display()
    );
    for file in files {
        let code = code_of(&file);
        for (number, line) in code.lines().enumerate() {
            // Not the store, nor its crate: what handlers need of it comes through the service.
            let code_only = without_strings(line);
            let reaches_the_store = identifiers(&code_only).any(|name| {
                matches!(
                    name,
                    "store" | "blobs" | "Store" | "BlobStore" | "muster_store"
                )
            });
            assert!(
                !reaches_the_store,
                "{}:{}: a handler reaches the store past the coordinator: {}",
                file.display(),
                number + 1,
                line.trim()
            );
        }
    }
}
