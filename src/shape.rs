//! Checks of the code's shape that cannot go stale, because they read the
//! sources themselves (with `syn`, Rust's own parser) rather than a list:
//! no function over [`MAX_FUNCTION_LINES`], no cycle between the crate's
//! top-level modules, `session/` and `protocol/` never naming russh and
//! never using the server side. Test code (`#[cfg(test)]`, `#[test]`) is
//! not held to the function length.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// The longest function allowed in `src/`, in lines (signature to closing brace).
const MAX_FUNCTION_LINES: usize = 60;

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file of `src/` belongs to (`front` for
/// `src/front/channel.rs`); `None` for `lib.rs` and `main.rs`.
fn top_module(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).expect("under src");
    let first = relative.components().next()?.as_os_str().to_string_lossy();
    let module = first.trim_end_matches(".rs").to_owned();
    (module != "lib" && module != "main").then_some(module)
}

/// `#[test]`, or `#[cfg(test)]` (or any `cfg` naming `test`).
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::Path(path) => path.is_ident("test"),
        syn::Meta::List(list) => {
            list.path.is_ident("cfg") && list.tokens.to_string().contains("test")
        }
        syn::Meta::NameValue(_) => false,
    })
}

/// What one file says about its functions and the modules it uses.
#[derive(Default)]
struct Survey {
    /// (name, first line, lines) of every non-test function.
    functions: Vec<(String, usize, usize)>,
    /// The first segment after `crate::` of every path and `use`.
    uses: BTreeSet<String>,
}

impl Survey {
    /// Records a function from its signature (not its doc comment) to the
    /// end of its body.
    fn function(&mut self, sig: &syn::Signature, body: proc_macro2::Span) {
        let (start, end) = (sig.span().start().line, body.end().line);
        self.functions
            .push((sig.ident.to_string(), start, end - start + 1));
    }
}

impl<'ast> Visit<'ast> for Survey {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test(&item.attrs) {
            self.function(&item.sig, item.block.span());
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test(&item.attrs) {
            self.function(&item.sig, item.block.span());
            syn::visit::visit_impl_item_fn(self, item);
        }
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(body) = &item.default {
            self.function(&item.sig, body.span());
        }
        syn::visit::visit_trait_item_fn(self, item);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if segments.next().is_some_and(|s| s.ident == "crate")
            && let Some(module) = segments.next()
        {
            self.uses.insert(module.ident.to_string());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_use_tree(&mut self, tree: &'ast syn::UseTree) {
        if let syn::UseTree::Path(path) = tree
            && path.ident == "crate"
        {
            collect_use_roots(&path.tree, &mut self.uses);
        }
        syn::visit::visit_use_tree(self, tree);
    }
}

/// The first names of a `use crate::{a::x, b}` tree: `a`, `b`.
fn collect_use_roots(tree: &syn::UseTree, roots: &mut BTreeSet<String>) {
    match tree {
        syn::UseTree::Path(path) => {
            roots.insert(path.ident.to_string());
        }
        syn::UseTree::Name(name) => {
            roots.insert(name.ident.to_string());
        }
        syn::UseTree::Rename(rename) => {
            roots.insert(rename.ident.to_string());
        }
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                collect_use_roots(tree, roots);
            }
        }
        syn::UseTree::Glob(_) => {}
    }
}

fn survey(file: &Path) -> Survey {
    let text = std::fs::read_to_string(file).expect("read source");
    let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut survey = Survey::default();
    survey.visit_file(&parsed);
    survey
}

#[test]
fn no_function_is_longer_than_sixty_lines() {
    let mut long = Vec::new();
    for file in sources(&src()) {
        for (name, line, lines) in survey(&file).functions {
            if lines > MAX_FUNCTION_LINES {
                long.push(format!("{}:{line} {name}: {lines} lines", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these along what they do:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_top_level_modules_use_each_other_without_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src()) {
        let Some(module) = top_module(&file) else {
            continue;
        };
        let uses = survey(&file).uses;
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(uses.into_iter().filter(|u| *u != module));
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("module cycle: {} -> {node}", path[at..].join(" -> "));
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph.contains_key("session") && graph.contains_key("front"));
}

#[test]
fn session_and_protocol_never_name_russh_nor_use_the_server_side() {
    let files: Vec<PathBuf> = sources(&src())
        .into_iter()
        .filter(|f| matches!(top_module(f).as_deref(), Some("session" | "protocol")))
        .collect();
    assert!(files.len() >= 9, "{files:?}");
    // A path or `use` of the crate; prose may mention it.
    let needle = ["russh", "::"].concat();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        assert!(!text.contains(&needle), "{} names russh", file.display());
        let allowed: &[&str] = match top_module(&file).as_deref() {
            // `memory` is the process's allocator, `child` and `reactor`
            // its children and descriptors on tokio: no part of the server.
            Some("session") => &["protocol", "session", "memory", "child", "reactor"],
            _ => &["protocol"],
        };
        for used in survey(&file).uses {
            assert!(
                allowed.contains(&used.as_str()),
                "{} uses crate::{used}: only {allowed:?} may cross",
                file.display()
            );
        }
    }
}
