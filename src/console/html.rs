//! The console's HTML: escaping, the page shell, and small pieces pages share. Every value that
//! comes from a resource, an event or a request goes through [`esc`] (or [`attr`]).

use std::fmt::Write as _;

use crate::admin::{Caller, Role};

/// `text` escaped for an HTML text node.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for a double-quoted attribute value (the same escapes).
pub fn attr(text: &str) -> String {
    esc(text)
}

/// `text` encoded as a URL query value (`application/x-www-form-urlencoded`).
pub fn query(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Which page of the navigation is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Events,
    DeadLetters,
    Resources,
    None,
}

/// A whole page: `main` inside the console's shell. `live` pages refresh their `<main>` in place
/// every 2 s when JavaScript runs (without it, they are current when loaded).
pub fn page(title: &str, nav: Nav, caller: Option<&Caller>, live: bool, main: &str) -> String {
    let link = |href: &str, label: &str, which: Nav| {
        let current = if nav == which {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<li><a href=\"{href}\"{current}>{label}</a></li>")
    };
    let who = match caller {
        Some(caller) => format!(
            "<div class=\"who\"><span>{} <span class=\"role\">({})</span></span><form method=\"post\" action=\"/console/logout\"><button type=\"submit\">Log out</button></form></div>",
            esc(&caller.name),
            caller.role.as_str()
        ),
        None => String::new(),
    };
    let nav_html = if caller.is_some() {
        format!(
            "<nav aria-label=\"Console\"><ul>{}{}{}{}</ul></nav>",
            link("/console", "Overview", Nav::Overview),
            link("/console/events", "Events", Nav::Events),
            link("/console/dead-letters", "Dead letters", Nav::DeadLetters),
            link("/console/resources", "Resources", Nav::Resources),
        )
    } else {
        String::new()
    };
    let live = if live { " data-live=\"2000\"" } else { "" };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} · kinetic</title><link rel=\"stylesheet\" href=\"/console/static/console.css\"><script src=\"/console/static/console.js\" defer></script></head><body><header><a class=\"brand\" href=\"/console\">kinetic</a>{nav_html}{who}</header><main id=\"main\"{live}>{main}</main></body></html>\n",
        title = esc(title),
    )
}

/// A table with a caption, `headers` and rows of already-escaped cells; `empty` when no rows.
pub fn table(
    id: &str,
    caption: &str,
    headers: &[&str],
    rows: &[Vec<String>],
    empty: &str,
) -> String {
    let mut html = format!(
        "<section aria-labelledby=\"{id}-title\"><h2 id=\"{id}-title\">{}</h2>",
        esc(caption)
    );
    if rows.is_empty() {
        let _ = write!(html, "<p class=\"empty\">{}</p></section>", esc(empty));
        return html;
    }
    let _ = write!(html, "<table id=\"{id}\"><thead><tr>");
    for header in headers {
        let _ = write!(html, "<th scope=\"col\">{}</th>", esc(header));
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for (index, cell) in row.iter().enumerate() {
            if index == 0 {
                let _ = write!(html, "<th scope=\"row\">{cell}</th>");
            } else {
                let _ = write!(html, "<td>{cell}</td>");
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></section>");
    html
}

/// READY as a word with a mark (never colour alone).
pub fn ready(ready: Option<bool>, problem: Option<&str>) -> String {
    match ready {
        Some(true) => "<span class=\"ok\">✓ Ready</span>".to_owned(),
        Some(false) => match problem {
            Some(problem) => format!(
                "<span class=\"bad\">✗ Not ready</span> <span class=\"why\">{}</span>",
                esc(problem)
            ),
            None => "<span class=\"bad\">✗ Not ready</span>".to_owned(),
        },
        None => "<span class=\"unknown\">—</span>".to_owned(),
    }
}

/// A number for a table cell: `—` when unknown.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    match value {
        // `+ 0.0` turns the -0.0 of an empty sum into 0.
        Some(value) if value.is_finite() => format!("{:.decimals$}", value + 0.0),
        _ => "—".to_owned(),
    }
}

/// A Unix-milliseconds time as RFC 3339 (UTC, to the millisecond).
pub fn time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| millis.to_string())
}

/// The page a console action refused for the caller's role shows (403).
pub fn refused(needed: Role, name: &str, has: Role) -> String {
    let main = format!(
        "<h1>Not allowed</h1><p role=\"alert\">This needs the <strong>{}</strong> role; the token <strong>{}</strong> has the <strong>{}</strong> role.</p><p>Log in with a token that has it (tokens and their roles are in <code>--admin-tokens</code>).</p><p><a href=\"/console\">Back to the overview</a></p>",
        needed.as_str(),
        esc(name),
        has.as_str()
    );
    page("Not allowed", Nav::None, None, false, &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(query("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
