//! The crate's modules form layers that import downward only.
//!
//! Every file under `src/` is mapped to a module of the table [`LAYERS`]
//! below; every `crate::...` path in it (in `use` items and inline, in
//! attributes such as `#[serde(with = "crate::...")]` too, but not in
//! comments or doc comments), and every `super::...` path, must lead to a
//! module of a lower layer, or of the same module. A path through a
//! crate-root re-export (`crate::Request`) counts as an import of the
//! module the root re-exports it from (read from `src/lib.rs`).
//!
//! The seven layers are those of the layout: L0 foundation, L1 encoding,
//! L2 public event types and direct calls, L3 mailbox, L4 routing core,
//! L5 transports and the event loop, L6 public handles. Where modules of one
//! layer import each other, the layer is split into sub-layers (`L0a` below
//! `L0b`...) so that the direction is still checked; any other import
//! between two modules of one sub-layer must be listed in [`EXCEPTIONS`]
//! with its reason.
//!
//! Relative `use` paths (`use command::Command;`, the root's
//! `pub use dispatcher::...`) name a module's own children and are not
//! checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module of the table: its name, and the module paths it stands for.
type Module = (&'static str, &'static [&'static str]);

/// Bottom to top: a sub-layer, what it is, and the modules in it. A module
/// `a::b` also covers the items named through it (`crate::a::b::Item`); an
/// entry `a::*` also covers every submodule of `a` (the files under
/// `src/a/`). One name may stand for several modules.
const LAYERS: &[(&str, &str, &[Module])] = &[
    (
        "L0a",
        "foundation: leaves",
        &[
            ("error", &["error"]),
            ("spin", &["spin"]),
            ("pattern", &["pattern"]),
            ("frame", &["frame"]),
            ("auth", &["auth"]),
            ("bounded", &["bounded"]),
            ("warnings", &["warnings"]),
        ],
    ),
    (
        "L0b",
        "foundation: identities, configuration, credentials, TLS configuration, reply slots",
        &[
            ("oneshot", &["oneshot"]),
            ("ids", &["ids"]),
            ("config", &["config"]),
            ("credentials", &["credentials"]),
            ("tls", &["tls"]),
        ],
    ),
    (
        "L0c",
        "foundation: limits, connection announcements, counters",
        &[
            ("limits", &["limits"]),
            ("connection", &["connection"]),
            ("stats", &["stats"]),
        ],
    ),
    (
        "L1a",
        "encoding: the payload format",
        &[("shape", &["shape"])],
    ),
    ("L1b", "encoding", &[("wire", &["wire"])]),
    (
        "L1c",
        "encoding: frames as a peer sends them",
        &[("peer_frames", &["peer_frames"])],
    ),
    ("L2a", "direct calls", &[("direct", &["direct"])]),
    ("L2b", "public event types", &[("event", &["event"])]),
    (
        "L3",
        "mailbox: the ways into a dispatcher thread and a service's queue",
        &[("mailbox", &["mailbox::*"])],
    ),
    ("L4", "routing core", &[("routing", &["routing::*"])]),
    ("L5a", "transports", &[("transport", &["transport::*"])]),
    (
        "L5b",
        "the event loop",
        &[("event_loop", &["dispatcher::event_loop::*"])],
    ),
    (
        "L6a",
        "public handles: methods, replies, hostile frames",
        &[
            ("methods", &["methods"]),
            ("reply", &["reply"]),
            ("fuzzing_frames", &["fuzzing_frames"]),
        ],
    ),
    (
        "L6b",
        "public handles: services",
        &[("service", &["service"])],
    ),
    (
        "L6c",
        "public handles: the dispatcher",
        &[("dispatcher", &["dispatcher"])],
    ),
    (
        "L6d",
        "public handles: exchange, in-memory links, RPC",
        &[
            ("exchange", &["exchange"]),
            ("memory", &["memory"]),
            ("rpc", &["rpc::*"]),
        ],
    ),
    (
        "L6e",
        "fuzzing (payloads of every kind, Value among them)",
        &[("fuzzing", &["fuzzing"])],
    ),
    ("L6f", "the crate root", &[("lib", &["lib"])]),
];

/// Imports allowed between two modules of one sub-layer: (from, to, why).
/// Keep it empty, or very short.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// A module of the table: its name and sub-layer.
#[derive(Clone, Copy, Debug)]
struct Unit {
    name: &'static str,
    layer: usize,
}

struct Table {
    /// Module path (`dispatcher::idmap`) -> (covers submodules, unit).
    entries: Vec<(Vec<String>, bool, Unit)>,
}

impl Table {
    fn new() -> Table {
        let mut entries = Vec::new();
        let mut seen = BTreeSet::new();
        for (layer, (_, _, units)) in LAYERS.iter().enumerate() {
            for (name, modules) in units.iter() {
                assert!(seen.insert(*name), "{name} is twice in LAYERS");
                for m in modules.iter() {
                    let (path, deep) = match m.strip_suffix("::*") {
                        Some(p) => (p, true),
                        None => (*m, false),
                    };
                    let segs = path.split("::").map(str::to_owned).collect();
                    entries.push((segs, deep, Unit { name, layer }));
                }
            }
        }
        Table { entries }
    }

    /// The unit a file's module belongs to: an exact entry, or a `::*`
    /// entry above it.
    fn unit_of_file(&self, module: &[String]) -> Option<Unit> {
        self.entries
            .iter()
            .filter(|(segs, deep, _)| {
                segs.as_slice() == module || (*deep && module.starts_with(segs))
            })
            .max_by_key(|(segs, _, _)| segs.len())
            .map(|(_, _, u)| *u)
    }

    /// The unit a path (`dispatcher::command::Command`) leads into: the
    /// longest entry it starts with.
    fn unit_of_path(&self, path: &[String]) -> Option<Unit> {
        self.entries
            .iter()
            .filter(|(segs, _, _)| path.starts_with(segs))
            .max_by_key(|(segs, _, _)| segs.len())
            .map(|(_, _, u)| *u)
    }

    fn is_module(&self, first: &str) -> bool {
        self.entries.iter().any(|(segs, _, _)| segs[0] == first)
    }
}

fn layer_name(layer: usize) -> String {
    let (name, what, _) = LAYERS[layer];
    format!("{name} ({what})")
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Open,
    Close,
    Comma,
    Star,
    /// A string literal's contents.
    Str(String),
    Other,
}

/// The tokens of a Rust source with their line numbers: comments (doc
/// comments included) dropped, string literals kept whole, character
/// literals and lifetimes told apart.
fn lex(src: &str) -> Vec<(usize, Tok)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let ident_char = |ch: char| ch == '_' || ch.is_alphanumeric();
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"'
            || (ch == 'b' && next == Some('"'))
            || ((ch == 'r' || (ch == 'b' && next == Some('r')))
                && raw_string_start(&c, i + usize::from(ch == 'b')).is_some())
        {
            let at = line;
            let (text, end) = string_literal(&c, i);
            line += text.matches('\n').count();
            out.push((at, Tok::Str(text)));
            i = end;
        } else if ch == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 3; // the quote, the backslash and the escaped character
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
            out.push((line, Tok::Other));
        } else if ident_start(ch) {
            let start = i;
            if ch == 'r' && next == Some('#') {
                i += 2; // a raw identifier
            }
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            out.push((line, Tok::Ident(word.trim_start_matches("r#").to_owned())));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (ident_char(c[i]) || c[i] == '.') {
                i += 1;
            }
            out.push((line, Tok::Other));
        } else {
            let tok = match ch {
                ':' if next == Some(':') => {
                    i += 1;
                    Tok::Path
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                '*' => Tok::Star,
                _ => Tok::Other,
            };
            out.push((line, tok));
            i += 1;
        }
    }
    out
}

/// If a raw string starts at `i` (`r"`, `r#"`...), the number of `#`s.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    if c.get(i) != Some(&'r') {
        return None;
    }
    let mut j = i + 1;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some(j - i - 1)
}

/// The contents of the string literal starting at `i`, and where it ends.
fn string_literal(c: &[char], mut i: usize) -> (String, usize) {
    if c[i] == 'b' {
        i += 1;
    }
    if let Some(hashes) = raw_string_start(c, i) {
        i += hashes + 2;
        let start = i;
        loop {
            if i >= c.len() {
                return (c[start..].iter().collect(), i);
            }
            if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                return (c[start..i].iter().collect(), i + 1 + hashes);
            }
            i += 1;
        }
    }
    i += 1;
    let start = i;
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    (c[start..i.min(c.len())].iter().collect(), i + 1)
}

// ------------------------------------------------------------- imports

/// One path found in a file: its line, the text as written, and the
/// module path it names from the crate root.
#[derive(Debug)]
struct Import {
    line: usize,
    text: String,
    path: Vec<String>,
}

/// Parses a use tree or path at `toks[i]` (after `crate::`): every full
/// path it names, appended to `prefix`.
fn paths(
    toks: &[(usize, Tok)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        match toks.get(i).map(|t| &t.1) {
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
                if toks.get(i).map(|t| &t.1) == Some(&Tok::Path) {
                    i += 1;
                    continue;
                }
                out.push(path);
                return i;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.1) {
                        Some(Tok::Close) | None => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        _ => {
                            let before = i;
                            i = paths(toks, i, path.clone(), out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            Some(Tok::Star) => {
                out.push(path);
                return i + 1;
            }
            _ => {
                out.push(path);
                return i;
            }
        }
    }
}

/// `crate::a::b` and `super::a` paths inside a string (serde's `with`,
/// `deserialize_with`...), as tokens.
fn string_paths(s: &str) -> Vec<(usize, Tok)> {
    if s.contains("crate::") || s.contains("super::") {
        lex(s)
    } else {
        Vec::new()
    }
}

/// Every `crate::` and `super::` path of a file whose module is `module`.
fn imports(src: &str, module: &[String]) -> Vec<Import> {
    let toks = lex(src);
    let mut out = Vec::new();
    scan(&toks, module, &mut out, None);
    out.retain(|i| !i.path.is_empty());
    out
}

fn scan(
    toks: &[(usize, Tok)],
    module: &[String],
    out: &mut Vec<Import>,
    line_of_string: Option<usize>,
) {
    // Inline modules (`mod tests { ... }`): their names and brace depth.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let (line, tok) = &toks[i];
        let line = line_of_string.unwrap_or(*line);
        match tok {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((_, Tok::Ident(name))), Some((_, Tok::Open))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Tok::Str(s) => {
                let inner = string_paths(s);
                if !inner.is_empty() {
                    let mut here: Vec<String> = module.to_vec();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    scan(&inner, &here, out, Some(line));
                }
            }
            Tok::Ident(w)
                if (w == "crate" || w == "super")
                    && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::Path) =>
            {
                // Not a path segment itself (`a::crate` cannot occur; `self::super` can).
                let preceded_by_path = i > 0 && toks[i - 1].1 == Tok::Path;
                if !preceded_by_path || w == "super" {
                    let mut base: Vec<String> = Vec::new();
                    let mut j = i;
                    if w == "super" {
                        let mut here: Vec<String> = module.to_vec();
                        here.extend(inline.iter().map(|(n, _)| n.clone()));
                        while let (Some((_, Tok::Ident(s))), Some((_, Tok::Path))) =
                            (toks.get(j), toks.get(j + 1))
                        {
                            if s != "super" {
                                break;
                            }
                            here.pop();
                            j += 2;
                        }
                        base = here;
                    } else {
                        j += 2;
                    }
                    let mut found = Vec::new();
                    let end = paths(toks, j, base, &mut found);
                    let text = render(&toks[i..end.min(toks.len())]);
                    for path in found {
                        out.push(Import {
                            line,
                            text: text.clone(),
                            path,
                        });
                    }
                    i = end.max(i + 1);
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

fn render(toks: &[(usize, Tok)]) -> String {
    let mut s = String::new();
    for (_, t) in toks {
        match t {
            Tok::Ident(w) => {
                if s.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    s.push(' ');
                }
                s.push_str(w);
            }
            Tok::Path => s.push_str("::"),
            Tok::Open => s.push('{'),
            Tok::Close => s.push('}'),
            Tok::Comma => s.push_str(", "),
            Tok::Star => s.push('*'),
            Tok::Str(_) | Tok::Other => s.push('…'),
        }
    }
    s
}

/// The crate root's re-exports: name -> the path it comes from.
fn root_exports(lib: &str) -> BTreeMap<String, Vec<String>> {
    let toks = lex(lib);
    let mut map = BTreeMap::new();
    let mut i = 0;
    while i + 1 < toks.len() {
        if toks[i].1 == Tok::Ident("pub".into()) && toks[i + 1].1 == Tok::Ident("use".into()) {
            let mut found = Vec::new();
            i = paths(&toks, i + 2, Vec::new(), &mut found);
            for mut path in found {
                if path.first().map(String::as_str) == Some("crate") {
                    path.remove(0);
                }
                if let Some(name) = path.last().cloned() {
                    map.insert(name, path);
                }
            }
        } else {
            i += 1;
        }
    }
    map
}

// ---------------------------------------------------------------- files

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `a::b`; `src/lib.rs` -> `lib`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut segs: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segs.last().map(String::as_str) == Some("mod") {
        segs.pop();
    }
    segs
}

#[test]
fn modules_import_only_from_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let table = Table::new();
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let exports = root_exports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );

    let mut problems = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let shown = format!("src/{}", rel.display());
        let module = module_of(rel);
        let Some(from) = table.unit_of_file(&module) else {
            problems.push(format!(
                "{shown} (module {}) is not in the layer table: add it to LAYERS in \
                 tests/layers.rs, in the layer it belongs to",
                module.join("::")
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("readable source");
        // `super::` in a file is relative to its own module; the root's is `crate`.
        let here = if module == ["lib"] {
            Vec::new()
        } else {
            module.clone()
        };
        for import in imports(&text, &here) {
            let mut path = import.path.clone();
            if !table.is_module(&path[0]) {
                match exports.get(&path[0]) {
                    Some(origin) => {
                        let mut p = origin.clone();
                        p.extend(path.drain(1..));
                        path = p;
                    }
                    None => {
                        problems.push(format!(
                            "{shown}:{} `{}`: `{}` is neither a module of the layer table nor \
                             re-exported by src/lib.rs",
                            import.line, import.text, path[0]
                        ));
                        continue;
                    }
                }
            }
            let Some(to) = table.unit_of_path(&path) else {
                problems.push(format!(
                    "{shown}:{} `{}`: no module of the layer table for `{}`",
                    import.line,
                    import.text,
                    path.join("::")
                ));
                continue;
            };
            if to.name == from.name || to.layer < from.layer {
                continue;
            }
            if to.layer == from.layer {
                if EXCEPTIONS
                    .iter()
                    .any(|(f, t, _)| *f == from.name && *t == to.name)
                {
                    used_exceptions.insert((from.name, to.name));
                    continue;
                }
                problems.push(format!(
                    "{shown}:{} `{}`: {} imports {}, both in {}: modules of one layer do not \
                     import each other (move the item down, or list the import in EXCEPTIONS \
                     with its reason)",
                    import.line,
                    import.text,
                    from.name,
                    to.name,
                    layer_name(from.layer)
                ));
            } else {
                problems.push(format!(
                    "{shown}:{} `{}`: {} in {} imports {} in {}, a higher layer",
                    import.line,
                    import.text,
                    from.name,
                    layer_name(from.layer),
                    to.name,
                    layer_name(to.layer)
                ));
            }
        }
    }
    for (f, t, why) in EXCEPTIONS {
        if !used_exceptions.contains(&(*f, *t)) {
            problems.push(format!(
                "the exception {f} -> {t} ({why}) is not needed any more: remove it from EXCEPTIONS"
            ));
        }
    }
    // A group (`crate::a::{B, C}`) is one problem, not one per name.
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    assert!(
        problems.is_empty(),
        "{} layering problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The scanner itself: comments ignored, strings and groups read.
#[test]
fn the_scanner_finds_paths() {
    let src = r##"
        //! Docs naming [`X`](crate::dispatcher::Dispatcher).
        use crate::{error::Error, ids::{AgentId, ServiceBinding}};
        use crate::wire;
        /// crate::event::Event in a doc comment
        /* crate::reply in a block comment /* nested */ crate::service */
        #[serde(deserialize_with = "crate::bounded::strings")]
        fn f<'a>(x: &'a str) -> char { let _ = crate::limits::MAX; let _ = r#"crate::"#; '{' }
        mod tests {
            use super::*;
            use super::super::config::deadline;
        }
        fn g() { let _ = super::sibling::thing(); }
    "##;
    let module = vec!["dispatcher".to_owned(), "timers".to_owned()];
    let found: Vec<String> = imports(src, &module)
        .iter()
        .map(|i| format!("{}:{}", i.line, i.path.join("::")))
        .collect();
    assert_eq!(
        found,
        [
            "3:error::Error",
            "3:ids::AgentId",
            "3:ids::ServiceBinding",
            "4:wire",
            "7:bounded::strings",
            "8:limits::MAX",
            "10:dispatcher::timers",
            "11:dispatcher::config::deadline",
            "13:dispatcher::sibling::thing",
        ]
    );
}
