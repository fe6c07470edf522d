//! Code from other files that the cursor's neighbourhood uses: for each name near the cursor that
//! the file imports from a module of the workspace (`import x`, `from .y import z`, relative
//! packages), or that another open buffer defines, the definition's signature: decorators and
//! `def`/`class` headers, docstrings, class fields and method headers, bodies elided. Files come
//! from a [`Workspace`] the caller supplies; everything here is pure.

use std::collections::HashSet;

use tree_sitter::{Node, Tree};

use crate::documents::parse;

use super::Source;

/// Another file's text, as the prompt shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    /// Workspace-relative path.
    pub path: String,
    /// Signatures, bodies elided.
    pub text: String,
}

/// Where other files come from: open buffers first (their unsaved text), else the disk.
pub trait Workspace {
    /// The text of the file at a workspace-relative path (`pkg/mod.py`), if there is one.
    fn file(&self, path: &str) -> Option<String>;
    /// Whether a file exists at a workspace-relative path (open or on disk).
    fn exists(&self, path: &str) -> bool {
        self.file(path).is_some()
    }
    /// Open buffers other than the current one: workspace-relative path and text.
    fn open_files(&self) -> Vec<(String, String)>;
}

/// No files but the current one.
impl Workspace for () {
    fn file(&self, _: &str) -> Option<String> {
        None
    }

    fn open_files(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Lines around the cursor whose names count as "used near the cursor".
const LINES_BEFORE: usize = 40;
const LINES_AFTER: usize = 10;
/// Longest docstring kept, in lines.
const DOC_LINES: usize = 6;

/// Where a name near the cursor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// `from module import name [as alias]`: `name` in `module`.
    Name { module: String, name: String },
    /// `import module [as alias]`: the module itself (its attributes used near the cursor).
    Module { module: String },
}

pub(super) fn gather(
    source: &Source,
    path: &str,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
    workspace: &dyn Workspace,
) -> Vec<Related> {
    if budget == 0 {
        return Vec::new();
    }
    let text = source.text;
    let near = names_near(source.tree, text, source.offset);
    if near.is_empty() {
        return Vec::new();
    }
    let bindings = import_bindings(source.tree, text);
    let defined_here = top_level_names(source.tree, text);
    let open = workspace.open_files();
    // What each open buffer defines: parsed once, and only if a name needs it.
    let mut open_names: Option<Vec<HashSet<String>>> = None;

    // (file path, wanted names or None for the whole module), nearest names first.
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    let mut push = |file: String, name: Option<String>| {
        if file != path && !wanted.contains(&(file.clone(), name.clone())) {
            wanted.push((file, name));
        }
    };
    for (name, attribute) in &near {
        if let Some(origin) = bindings
            .iter()
            .find(|(bound, _)| bound == name)
            .map(|b| &b.1)
        {
            match origin {
                Origin::Name { module, name } => {
                    if let Some(file) = resolve(path, module, &open, workspace) {
                        push(file, Some(name.clone()));
                    } else if let Some(file) = resolve(path, &join(module, name), &open, workspace)
                    {
                        // `from pkg import module`
                        push(file, attribute.clone());
                    }
                }
                Origin::Module { module } => {
                    if let Some(file) = resolve(path, module, &open, workspace) {
                        push(file, attribute.clone());
                    }
                }
            }
        } else if !defined_here.contains(name) {
            let open_names = open_names.get_or_insert_with(|| {
                open.iter()
                    .map(|(_, other)| top_level_names(&parse(other), other))
                    .collect()
            });
            for ((file, _), names) in open.iter().zip(open_names.iter()) {
                if names.contains(name) {
                    push(file.clone(), Some(name.clone()));
                }
            }
        }
    }

    let mut out: Vec<Related> = Vec::new();
    let mut used = 0;
    let mut seen = HashSet::new();
    // Each file read and parsed once, however many of its names are wanted.
    let mut files: std::collections::HashMap<String, Option<(String, Tree)>> =
        std::collections::HashMap::new();
    for (file, name) in wanted {
        let loaded = files.entry(file.clone()).or_insert_with(|| {
            let text = open
                .iter()
                .find(|(p, _)| *p == file)
                .map(|(_, t)| t.clone())
                .or_else(|| workspace.file(&file))?;
            let tree = parse(&text);
            Some((text, tree))
        });
        let Some((other, tree)) = loaded.as_ref() else {
            continue;
        };
        let pieces = match &name {
            Some(name) => signature_of(tree, other, name).into_iter().collect(),
            None => module_summary(tree, other),
        };
        for piece in pieces {
            if !seen.insert((file.clone(), piece.clone())) {
                continue;
            }
            let cost = count(&piece) + 1;
            if used + cost > budget {
                continue;
            }
            used += cost;
            match out.iter_mut().find(|r| r.path == file) {
                Some(r) => {
                    r.text.push('\n');
                    r.text.push_str(&piece);
                    r.text.push('\n');
                }
                None => out.push(Related {
                    path: file.clone(),
                    text: format!("{piece}\n"),
                }),
            }
        }
    }
    // The most relevant file goes last, next to the current one.
    out.reverse();
    out
}

/// Identifiers on the lines around the cursor, nearest first, each with the attribute read from
/// it (`x` in `x.attr` gives `("x", Some("attr"))`).
fn names_near(tree: &Tree, text: &str, offset: usize) -> Vec<(String, Option<String>)> {
    let start = text[..offset]
        .rmatch_indices('\n')
        .nth(LINES_BEFORE)
        .map_or(0, |(i, _)| i + 1);
    let end = text[offset..]
        .match_indices('\n')
        .nth(LINES_AFTER)
        .map_or(text.len(), |(i, _)| offset + i);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut found: Vec<(usize, String, Option<String>)> = Vec::new();
    let mut stack = vec![tree.root_node()];
    while let Some(node) = stack.pop() {
        if node.end_byte() < start
            || node.start_byte() > end
            || matches!(node.kind(), "import_statement" | "import_from_statement")
        {
            continue;
        }
        if node.kind() == "identifier" {
            let Some(name) = text.get(node.byte_range()) else {
                continue;
            };
            let parent = node.parent();
            // Skip `y` of `x.y`: it is read as x's attribute below.
            if parent.is_some_and(|p| {
                p.kind() == "attribute" && p.child_by_field_name("attribute") == Some(node)
            }) {
                continue;
            }
            let attribute = parent
                .filter(|p| {
                    p.kind() == "attribute" && p.child_by_field_name("object") == Some(node)
                })
                .and_then(|p| p.child_by_field_name("attribute"))
                .and_then(|a| text.get(a.byte_range()))
                .map(str::to_owned);
            // Measured from the cursor's line, not the cursor, so typing along the line
            // keeps the order (and the prompt's related files) the same.
            let distance = if node.start_byte() < line_start {
                line_start - node.start_byte()
            } else {
                node.start_byte().saturating_sub(line_end)
            };
            found.push((distance, name.to_owned(), attribute));
            continue;
        }
        let mut cursor = node.walk();
        stack.extend(node.children(&mut cursor));
    }
    found.sort_by_key(|(d, _, _)| *d);
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for (_, name, attribute) in found {
        let entry = (name, attribute);
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

/// Names the file's import statements bind, anywhere in the file.
fn import_bindings(tree: &Tree, text: &str) -> Vec<(String, Origin)> {
    let mut out = Vec::new();
    let mut stack = vec![tree.root_node()];
    let get = |n: Node| text.get(n.byte_range()).unwrap_or("").to_owned();
    while let Some(node) = stack.pop() {
        match node.kind() {
            "import_statement" => {
                let mut cursor = node.walk();
                for name in node.children_by_field_name("name", &mut cursor) {
                    match name.kind() {
                        "aliased_import" => {
                            let (Some(module), Some(alias)) = (
                                name.child_by_field_name("name"),
                                name.child_by_field_name("alias"),
                            ) else {
                                continue;
                            };
                            out.push((
                                get(alias),
                                Origin::Module {
                                    module: get(module),
                                },
                            ));
                        }
                        _ => {
                            // `import a.b` binds `a`; its attributes name submodules or members.
                            let module = get(name);
                            let first = module.split('.').next().unwrap_or("").to_owned();
                            out.push((first, Origin::Module { module }));
                        }
                    }
                }
            }
            "import_from_statement" => {
                let Some(module) = node.child_by_field_name("module_name").map(get) else {
                    continue;
                };
                let mut cursor = node.walk();
                for name in node.children_by_field_name("name", &mut cursor) {
                    let (imported, bound) = match name.kind() {
                        "aliased_import" => (
                            name.child_by_field_name("name").map(get),
                            name.child_by_field_name("alias").map(get),
                        ),
                        _ => (Some(get(name)), Some(get(name))),
                    };
                    if let (Some(imported), Some(bound)) = (imported, bound) {
                        out.push((
                            bound,
                            Origin::Name {
                                module: module.clone(),
                                name: imported,
                            },
                        ));
                    }
                }
            }
            _ => {
                let mut cursor = node.walk();
                stack.extend(node.named_children(&mut cursor));
            }
        }
    }
    out
}

/// Names the module defines at its top level (functions, classes, assigned names).
fn top_level_names(tree: &Tree, text: &str) -> HashSet<String> {
    let root = tree.root_node();
    let mut cursor = root.walk();
    root.named_children(&mut cursor)
        .filter_map(|n| definition_name(n, text))
        .collect()
}

fn definition_name(node: Node, text: &str) -> Option<String> {
    let node = undecorated(node);
    match node.kind() {
        "function_definition" | "class_definition" => node
            .child_by_field_name("name")
            .and_then(|n| text.get(n.byte_range()))
            .map(str::to_owned),
        "expression_statement" => {
            let assignment = node.named_child(0).filter(|c| c.kind() == "assignment")?;
            let left = assignment.child_by_field_name("left")?;
            (left.kind() == "identifier")
                .then(|| text.get(left.byte_range()).map(str::to_owned))
                .flatten()
        }
        _ => None,
    }
}

fn undecorated(node: Node) -> Node {
    if node.kind() == "decorated_definition" {
        node.child_by_field_name("definition").unwrap_or(node)
    } else {
        node
    }
}

/// The module's files a dotted (possibly relative) module name may live in, relative to the
/// workspace, for a file at `from` (also workspace-relative): `pkg/mod.py`, then
/// `pkg/mod/__init__.py`, under the workspace root and under `src/`.
pub fn module_candidates(from: &str, module: &str) -> Vec<String> {
    let dots = module.len() - module.trim_start_matches('.').len();
    let rest = &module[dots..];
    let mut bases: Vec<String> = Vec::new();
    if dots > 0 {
        // `.` is the importing file's package, each further dot one package up.
        let mut dir: Vec<&str> = from.split('/').collect();
        dir.pop();
        for _ in 1..dots {
            if dir.pop().is_none() {
                return Vec::new();
            }
        }
        bases.push(dir.join("/"));
    } else {
        bases.push(String::new());
        bases.push("src".into());
    }
    let tail = rest.replace('.', "/");
    let mut out = Vec::new();
    for base in bases {
        let stem = [base.as_str(), tail.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        if stem.is_empty() {
            continue;
        }
        out.push(format!("{stem}.py"));
        out.push(format!("{stem}/__init__.py"));
    }
    out
}

fn resolve(
    from: &str,
    module: &str,
    open: &[(String, String)],
    workspace: &dyn Workspace,
) -> Option<String> {
    module_candidates(from, module)
        .into_iter()
        .find(|c| open.iter().any(|(p, _)| p == c) || workspace.exists(c))
}

fn join(module: &str, name: &str) -> String {
    if module.ends_with('.') {
        format!("{module}{name}")
    } else {
        format!("{module}.{name}")
    }
}

/// The signature of the top-level definition `name`, if the file has one.
fn signature_of(tree: &Tree, text: &str, name: &str) -> Option<String> {
    let root = tree.root_node();
    let mut cursor = root.walk();
    let node = root
        .named_children(&mut cursor)
        .find(|n| definition_name(*n, text).as_deref() == Some(name))?;
    Some(signature(node, text))
}

/// Signatures of all public top-level definitions.
fn module_summary(tree: &Tree, text: &str) -> Vec<String> {
    let root = tree.root_node();
    let mut cursor = root.walk();
    root.named_children(&mut cursor)
        .filter(|n| definition_name(*n, text).is_some_and(|name| !name.starts_with('_')))
        .map(|n| signature(n, text))
        .collect()
}

/// A definition with its body elided: functions keep header and docstring, classes their header,
/// docstring, fields and method signatures; an assignment its first line.
fn signature(node: Node, text: &str) -> String {
    let definition = undecorated(node);
    match definition.kind() {
        "function_definition" => function_signature(node, text),
        "class_definition" => {
            let mut out = header(node, definition, text);
            let Some(body) = definition.child_by_field_name("body") else {
                return out;
            };
            let mut any = false;
            let mut cursor = body.walk();
            for (i, member) in body.named_children(&mut cursor).enumerate() {
                let inner = undecorated(member);
                let piece = match inner.kind() {
                    "expression_statement" if i == 0 && is_docstring(inner) => {
                        Some(docstring(inner, text))
                    }
                    "expression_statement" => {
                        // Fields: `x: int = 0`, `y = 1`.
                        let first = inner.named_child(0);
                        first
                            .filter(|c| c.kind() == "assignment")
                            .and_then(|_| first_line(member, text))
                    }
                    "function_definition" => {
                        let name = inner
                            .child_by_field_name("name")
                            .and_then(|n| text.get(n.byte_range()))
                            .unwrap_or("");
                        (!name.starts_with('_') || name == "__init__" || name == "__call__")
                            .then(|| function_signature(member, text))
                    }
                    _ => None,
                };
                if let Some(piece) = piece {
                    out.push('\n');
                    out.push_str(&piece);
                    any = true;
                }
            }
            if !any {
                out.push_str("\n    ...");
            }
            out
        }
        _ => first_line(node, text).unwrap_or_default(),
    }
}

fn function_signature(node: Node, text: &str) -> String {
    let definition = undecorated(node);
    let mut out = header(node, definition, text);
    let body = definition.child_by_field_name("body");
    let indent = body
        .map(|b| " ".repeat(b.start_position().column))
        .unwrap_or_else(|| "    ".into());
    if let Some(first) = body.and_then(|b| b.named_child(0))
        && first.kind() == "expression_statement"
        && is_docstring(first)
    {
        out.push('\n');
        out.push_str(&docstring(first, text));
    }
    out.push('\n');
    out.push_str(&indent);
    out.push_str("...");
    out
}

/// From the first decorator (with its line's indentation) to the colon before the body.
fn header(node: Node, definition: Node, text: &str) -> String {
    let start = super::line_start_of(text, node.start_byte());
    let end = definition
        .child_by_field_name("body")
        .map_or(definition.end_byte(), |b| b.start_byte());
    text.get(start..end)
        .unwrap_or("")
        .trim_end()
        .replace("\r\n", "\n")
}

fn is_docstring(statement: Node) -> bool {
    statement
        .named_child(0)
        .is_some_and(|c| c.kind() == "string" || c.kind() == "concatenated_string")
}

/// The docstring with its indentation, cut to [`DOC_LINES`] lines (closing quotes restored).
fn docstring(statement: Node, text: &str) -> String {
    let start = super::line_start_of(text, statement.start_byte());
    let full = text.get(start..statement.end_byte()).unwrap_or("");
    let lines: Vec<&str> = full.lines().collect();
    if lines.len() <= DOC_LINES {
        return full.trim_end().to_owned();
    }
    let indent = &lines[0][..super::indentation(lines[0])];
    let quote = if full.contains("'''") && !full.contains("\"\"\"") {
        "'''"
    } else {
        "\"\"\""
    };
    let mut out = lines[..DOC_LINES].join("\n");
    out.push('\n');
    out.push_str(indent);
    out.push_str(quote);
    out
}

fn first_line(node: Node, text: &str) -> Option<String> {
    let start = super::line_start_of(text, node.start_byte());
    let full = text.get(start..node.end_byte())?;
    full.lines().next().map(|l| l.trim_end().to_owned())
}
