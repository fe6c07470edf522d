//! Cursor-marked fixtures (`$0`) with the expected mode, windows and related code.

use super::*;

/// About four characters per token, like code in a BPE vocabulary.
fn count(s: &str) -> usize {
    s.len().div_ceil(4)
}

fn parse(text: &str) -> Tree {
    crate::documents::parse(text)
}

fn context_with(fixture: &str, budget: Budget, path: Option<&str>, ws: &dyn Workspace) -> Context {
    let offset = fixture.find("$0").expect("fixture has a $0 cursor");
    let text = fixture.replacen("$0", "", 1);
    let tree = parse(&text);
    let source = Source {
        text: &text,
        tree: &tree,
        offset,
        path,
    };
    build(&source, &budget, &count, ws)
}

fn context(fixture: &str) -> Context {
    context_with(fixture, Budget::default(), None, &())
}

#[test]
fn mode_follows_the_cursor_line_and_the_tree() {
    let cases = [
        // Text on the cursor's line: the rest of that line.
        ("def add(a, b):\n    return $0\n", Mode::Line),
        ("x = foo($0)\n", Mode::Line),
        ("$0print(1)\n", Mode::Line),
        // A blank line that opens an empty body: a block.
        ("def f():\n    $0\n", Mode::Block),
        ("def f():\n    $0", Mode::Block),
        ("for x in xs:\n    $0\nprint(1)\n", Mode::Block),
        (
            "class A:\n    def f(self):\n        $0\n\n    def g(self):\n        pass\n",
            Mode::Block,
        ),
        // A blank line inside a block that goes on below: one statement.
        (
            "def f():\n    x = 1\n    $0\n    return x\n",
            Mode::Statement,
        ),
        ("def f():\n    $0\n    return 1\n", Mode::Statement),
        ("if ok:\n    a = 1\n$0\nb = 2\n", Mode::Statement),
        // A blank line at the end of a block or file: a block.
        ("def f():\n    x = 1\n    $0\n\ny = 2\n", Mode::Block),
        ("def f():\n    x = 1\n        $0\n\ny = 2\n", Mode::Block),
        ("x = 1\n$0", Mode::Block),
    ];
    for (fixture, expected) in cases {
        assert_eq!(context(fixture).mode, expected, "{fixture:?}");
    }
}

#[test]
fn the_cursor_line_and_its_neighbours_are_reported() {
    let c = context("def f(x):\n    y = x\n\n    return $0y + 1\n    pass\n");
    assert_eq!(c.line_before, "    return ");
    assert_eq!(c.line_after, "y + 1");
    assert_eq!(c.indent, 4);
    assert_eq!(c.previous_line.as_deref(), Some("    y = x"));
    assert_eq!(c.next_line.as_deref(), Some("    pass"));
    assert_eq!(c.path, UNNAMED);
    assert!(c.related.is_empty());
}

#[test]
fn small_files_are_whole() {
    let c = context("import os\n\ndef f():\n    return os.$0\n\nprint(f())\n");
    assert_eq!(c.prefix, "import os\n\ndef f():\n    return os.");
    assert_eq!(c.suffix, "\n\nprint(f())\n");
}

/// `count` lines of `def name_i` functions, each 3 lines.
fn functions(name: &str, count: usize) -> String {
    (0..count)
        .map(|i| format!("def {name}_{i}(a):\n    b = a + {i}\n    return b\n\n"))
        .collect()
}

#[test]
fn prefix_window_starts_at_a_statement_and_keeps_the_imports() {
    let fixture = format!(
        "import os\nfrom typing import List\n\n{}def target(xs: List[int]):\n    total = 0\n    $0\n",
        functions("before", 40)
    );
    let budget = Budget {
        prefix_tokens: 120,
        suffix_tokens: 64,
        related_tokens: 0,
        lost_docstring: false,
    };
    let c = context_with(&fixture, budget, None, &());
    assert!(
        c.prefix
            .starts_with("import os\nfrom typing import List\n\ndef before_"),
        "{:?}",
        c.prefix
    );
    assert!(
        c.prefix
            .ends_with("def target(xs: List[int]):\n    total = 0\n    ")
    );
    // Whole functions only: the window never starts inside one.
    let window = c.prefix.split_once("\n\n").map_or("", |(_, w)| w);
    assert!(window.starts_with("def before_"), "{window:?}");
    assert!(count(&c.prefix) <= 120 + 8, "{}", count(&c.prefix));
    // Nearest code kept: the last function before the cursor's.
    assert!(c.prefix.contains("def before_39(a):"));
}

#[test]
fn a_window_inside_a_long_function_keeps_its_headers() {
    let docstring = "        Explains at length.\n".repeat(30);
    let fixture = format!(
        "import os\n\nclass Shop:\n    def total(self, items,\n              tax):\n        \"\"\"Sum.\n{docstring}        \"\"\"\n        s = 0\n        for item in items:\n            s += item\n        $0\n"
    );
    let budget = Budget {
        prefix_tokens: 60,
        suffix_tokens: 16,
        related_tokens: 0,
        lost_docstring: true,
    };
    let c = context_with(&fixture, budget, None, &());
    // The window cannot start inside the docstring; the class and method headers stay, so the
    // window is valid code, and the docstring's first lines take the room left, quotes closed.
    assert!(
        c.prefix.starts_with(
            "import os\n\nclass Shop:\n    def total(self, items,\n              tax):\n        \"\"\"Sum.\n        Explains at length.\n"
        ),
        "{:?}",
        c.prefix
    );
    assert!(
        c.prefix
            .ends_with("length.\n        \"\"\"\n        s = 0\n        for item in items:\n            s += item\n        "),
        "{:?}",
        c.prefix
    );
    assert!(c.prefix.matches("Explains").count() < 30);
    assert!(count(&c.prefix) <= 60 + 8, "{}", count(&c.prefix));
    let text = format!("{}pass\n", c.prefix);
    assert!(!parse(&text).root_node().has_error(), "{text}");
    // A window that reaches the header needs none added.
    let whole = context_with(&fixture, Budget::default(), None, &());
    assert_eq!(whole.prefix.matches("class Shop:").count(), 1);
    // A half-typed line (which turns the method into an error node) leaves them as they are.
    let typing = fixture.replace("$0", "total = round(s * (1 + tax$0");
    let c2 = context_with(&typing, budget, None, &());
    assert_eq!(
        c2.prefix.strip_suffix("total = round(s * (1 + tax"),
        Some(c.prefix.as_str())
    );
}

#[test]
fn suffix_window_ends_after_a_whole_statement() {
    let fixture = format!("def target():\n    $0\n\n{}", functions("after", 40));
    let budget = Budget {
        prefix_tokens: 64,
        suffix_tokens: 60,
        related_tokens: 0,
        lost_docstring: false,
    };
    let c = context_with(&fixture, budget, None, &());
    assert!(
        c.suffix.starts_with("\n\ndef after_0(a):\n"),
        "{:?}",
        c.suffix
    );
    assert!(
        c.suffix.trim_end().ends_with("return b"),
        "ends with a whole function: {:?}",
        c.suffix
    );
    assert!(count(&c.suffix) <= 60);
}

/// A workspace held in memory.
struct Files {
    disk: Vec<(&'static str, &'static str)>,
    open: Vec<(String, String)>,
}

impl Workspace for Files {
    fn file(&self, path: &str) -> Option<String> {
        self.disk
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| (*t).to_owned())
    }

    fn open_files(&self) -> Vec<(String, String)> {
        self.open.clone()
    }
}

const MODELS: &str = r#"from dataclasses import dataclass


@dataclass
class User:
    """A registered user."""

    name: str
    email: str
    active: bool = True

    def display(self) -> str:
        return f"{self.name} <{self.email}>"

    def _secret(self):
        return 42


def unrelated():
    pass
"#;

const UTILS: &str = r#"import re


def slugify(text: str, sep: str = "-") -> str:
    """Lowercase `text` and join its words with `sep`."""
    words = re.findall(r"\w+", text.lower())
    return sep.join(words)


def other():
    return 1
"#;

#[test]
fn related_code_brings_signatures_of_imported_names() {
    let files = Files {
        disk: vec![("app/models.py", MODELS), ("utils.py", UTILS)],
        open: Vec::new(),
    };
    let fixture = "from .models import User\nimport utils\n\n\ndef make(name):\n    slug = utils.slugify(name)\n    return User($0)\n";
    let c = context_with(fixture, Budget::default(), Some("app/views.py"), &files);
    let paths: Vec<&str> = c.related.iter().map(|r| r.path.as_str()).collect();
    // The nearest name's file goes last, next to the current file.
    assert_eq!(paths, ["utils.py", "app/models.py"]);
    let models = &c.related[1].text;
    assert_eq!(
        models,
        "@dataclass\nclass User:\n    \"\"\"A registered user.\"\"\"\n    name: str\n    email: str\n    active: bool = True\n    def display(self) -> str:\n        ...\n"
    );
    let utils = &c.related[0].text;
    assert_eq!(
        utils,
        "def slugify(text: str, sep: str = \"-\") -> str:\n    \"\"\"Lowercase `text` and join its words with `sep`.\"\"\"\n    ...\n"
    );
    assert_eq!(c.path, "app/views.py");
}

#[test]
fn related_code_comes_from_open_buffers_and_fits_its_budget() {
    let files = Files {
        disk: Vec::new(),
        open: vec![("helpers.py".into(), UTILS.into())],
    };
    let fixture = "def run(title):\n    return slugify($0)\n";
    let c = context_with(fixture, Budget::default(), Some("main.py"), &files);
    assert_eq!(c.related.len(), 1);
    assert_eq!(c.related[0].path, "helpers.py");
    assert!(c.related[0].text.starts_with("def slugify("));

    let tight = Budget {
        related_tokens: 5,
        ..Budget::default()
    };
    let c = context_with(fixture, tight, Some("main.py"), &files);
    assert!(c.related.is_empty(), "nothing fits 5 tokens");
}

#[test]
fn names_defined_here_or_unresolved_bring_nothing() {
    let files = Files {
        disk: vec![("utils.py", UTILS)],
        open: vec![("helpers.py".into(), UTILS.into())],
    };
    // `slugify` is defined in this file; `numpy` is not in the workspace.
    let fixture = "import numpy as np\n\ndef slugify(t):\n    return t\n\nslugify(np.$0)\n";
    let c = context_with(fixture, Budget::default(), Some("main.py"), &files);
    assert!(c.related.is_empty(), "{:?}", c.related);
}

#[test]
fn modules_resolve_relative_to_the_importing_file() {
    assert_eq!(
        module_candidates("pkg/sub/mod.py", ".models"),
        ["pkg/sub/models.py", "pkg/sub/models/__init__.py"]
    );
    assert_eq!(
        module_candidates("pkg/sub/mod.py", "..core.db"),
        ["pkg/core/db.py", "pkg/core/db/__init__.py"]
    );
    assert_eq!(
        module_candidates("main.py", "app.models"),
        [
            "app/models.py",
            "app/models/__init__.py",
            "src/app/models.py",
            "src/app/models/__init__.py"
        ]
    );
    assert!(module_candidates("main.py", "...far").is_empty());
}

#[test]
fn an_empty_function_body_is_recognised() {
    let yes = [
        "def f(x):\n    $0",
        "def f(x):\n    \"\"\"Doc.\n\n    More.\n    \"\"\"\n    $0\n",
        "class A:\n    async def f(self):\n        $0\n\n    def g(self):\n        pass\n",
    ];
    for fixture in yes {
        assert!(context(fixture).empty_body, "{fixture:?}");
    }
    let no = [
        "def f(x):\n    y = 1\n    $0",
        "def f(x):\n    $0\n    return 1\n",
        "x = '''text'''\n$0",
        "for x in xs:\n    $0",
        "def f(x):\n    return $0",
    ];
    for fixture in no {
        assert!(!context(fixture).empty_body, "{fixture:?}");
    }
}

#[test]
fn a_docstring_above_the_window_is_kept_whole_or_by_its_first_lines() {
    let header = "def f(x):\n";
    let end = header.len();
    // Whole when it fits, with the rest of its closing line.
    let text = format!("{header}    r'''Doubles x.\n\n    More.\n    '''  # note\n    y = 2\n");
    assert_eq!(
        docstring(&text, end, 4, || 100, &count),
        "    r'''Doubles x.\n\n    More.\n    '''  # note\n"
    );
    // Cut: whole lines, the same quotes closed at its indentation.
    let long = format!(
        "{header}    \"\"\"Doubles x.\n{}    \"\"\"\n",
        "    And more.\n".repeat(20)
    );
    let cut = docstring(&long, end, 4, || 20, &count);
    assert!(
        cut.starts_with("    \"\"\"Doubles x.\n    And more.\n"),
        "{cut:?}"
    );
    assert!(cut.ends_with("And more.\n    \"\"\"\n"), "{cut:?}");
    assert!(count(&cut) <= 20, "{}", count(&cut));
    assert!(
        !parse(&format!("{header}{cut}    pass\n"))
            .root_node()
            .has_error()
    );
    // No room for even its first line, a body that starts with code, a docstring not closed
    // before the window: nothing.
    assert_eq!(docstring(&long, end, 4, || 3, &count), "");
    assert_eq!(
        docstring(
            &format!("{header}    x = '''a'''\n"),
            end,
            4,
            || 100,
            &count
        ),
        ""
    );
    assert_eq!(
        docstring(
            &format!("{header}    '''a\n    b\n"),
            end,
            4,
            || 100,
            &count
        ),
        ""
    );
    // One line that does not fit is not cut.
    assert_eq!(
        docstring(
            &format!("{header}    \"\"\"{}\"\"\"\n", "word ".repeat(40)),
            end,
            4,
            || 20,
            &count
        ),
        ""
    );
}

#[test]
fn a_lost_docstring_goes_in_only_where_the_window_reads_as_valid_code() {
    let small = Budget {
        prefix_tokens: 42,
        suffix_tokens: 16,
        related_tokens: 0,
        lost_docstring: true,
    };
    // A window that starts deeper than the body (inside the loop): the docstring between the
    // header and it would be an unexpected indent.
    let body = "            total += item * 2\n".repeat(40);
    let deeper = format!(
        "def total(items):\n    \"\"\"Sum.\"\"\"\n    total = 0\n    for item in items:\n{body}            $0\n"
    );
    let c = context_with(&deeper, small, None, &());
    assert!(!c.prefix.contains("Sum."), "{:?}", c.prefix);
    // Only for a window used once: a cached one keeps its start while lines are added below.
    let docstring = "    Explains at length.\n".repeat(60);
    let level = |lines: usize| {
        format!(
            "def total(items):\n    \"\"\"Sum.\n{docstring}    \"\"\"\n    s = 0\n{}    $0\n",
            "    s += 1\n".repeat(lines)
        )
    };
    let cached = Budget {
        lost_docstring: false,
        prefix_tokens: 200,
        ..small
    };
    let (two, three) = (
        context_with(&level(2), cached, None, &()),
        context_with(&level(3), cached, None, &()),
    );
    assert!(!two.prefix.contains("Explains"), "{:?}", two.prefix);
    assert!(
        three.prefix.starts_with(two.prefix.trim_end()),
        "{:?}",
        three.prefix
    );
    let used_once = Budget {
        lost_docstring: true,
        ..cached
    };
    let once = context_with(&level(2), used_once, None, &());
    assert!(
        once.prefix.contains("Sum.\n    Explains"),
        "{:?}",
        once.prefix
    );
    // A header whose colon comes before a comment still ends there.
    let commented = format!(
        "def total(items):  # noqa\n    \"\"\"Sum.\n{docstring}    \"\"\"\n    s = 0\n    if items:\n        s += 2\n    $0\n"
    );
    let c = context_with(&commented, used_once, None, &());
    assert!(
        c.prefix
            .starts_with("def total(items):  # noqa\n    \"\"\"Sum.\n"),
        "{:?}",
        c.prefix
    );
    assert!(
        c.prefix
            .ends_with("    s = 0\n    if items:\n        s += 2\n    "),
        "{:?}",
        c.prefix
    );
}

#[test]
fn an_escaped_or_lone_quote_does_not_end_a_docstring() {
    let header = "def f(x):\n";
    let end = header.len();
    let text = format!("{header}    \"\"\"Say \\\"\"\"hi\\\"\"\".\n    More.\n    \"\"\"\n");
    assert_eq!(docstring(&text, end, 4, || 100, &count), &text[end..]);
    // Room for the opening quotes and closing ones but no text: nothing.
    let bare = format!(
        "{header}    \"\"\"\n{}    \"\"\"\n",
        "    Long line of words here.\n".repeat(5)
    );
    assert_eq!(docstring(&bare, end, 4, || 5, &count), "");
    // Not at the body's indentation: nothing.
    assert_eq!(docstring(&bare, end, 8, || 100, &count), "");
}
