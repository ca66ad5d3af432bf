//! Subject patterns: `*` matches zero or more characters (dots included), `?`
//! exactly one; everything else is literal and the whole subject must match.

/// A compiled subject pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// No wildcard: equality.
    Literal,
    /// `*` alone.
    Any,
    /// A literal prefix followed by one `*`.
    Prefix(usize),
    /// Anything else: the general matcher.
    Glob,
}

impl Pattern {
    pub(crate) fn new(text: &str) -> Pattern {
        let wild = text.bytes().filter(|b| *b == b'*' || *b == b'?').count();
        let kind = if wild == 0 {
            Kind::Literal
        } else if text == "*" {
            Kind::Any
        } else if wild == 1 && text.ends_with('*') {
            Kind::Prefix(text.len() - 1)
        } else {
            Kind::Glob
        };
        Pattern {
            text: text.to_owned(),
            kind,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn matches(&self, subject: &str) -> bool {
        match self.kind {
            Kind::Literal => self.text == subject,
            Kind::Any => true,
            Kind::Prefix(n) => subject.as_bytes().starts_with(&self.text.as_bytes()[..n]),
            Kind::Glob => glob(&self.text, subject),
        }
    }
}

/// Iterative wildcard match with single-star backtracking: O(len(p) * len(s))
/// at worst, no recursion, no allocation. Works on chars so that `?` matches
/// one character, not one byte.
fn glob(pattern: &str, subject: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = subject.chars().collect();
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).matches(s)
    }

    #[test]
    fn literal() {
        assert!(m("system.time", "system.time"));
        assert!(!m("system.time", "system.timex"));
        assert!(!m("system.time", "system.tim"));
    }

    #[test]
    fn star_matches_dots_and_empty() {
        assert!(m("system.*", "system.time"));
        assert!(m("system.*", "system."));
        assert!(m("system.*", "system.a.b.c"));
        assert!(!m("system.*", "system"));
        assert!(m("*", ""));
        assert!(m("*", "anything.at.all"));
        assert!(m("*.time", "system.time"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**", "x"));
    }

    #[test]
    fn question_matches_exactly_one() {
        assert!(m("load?", "load1"));
        assert!(!m("load?", "load"));
        assert!(!m("load?", "load12"));
        assert!(m("?", "é"));
        assert!(m("a?c*", "abc.d"));
    }

    #[test]
    fn backtracking() {
        assert!(m("*ab", "aab"));
        assert!(m("*a*b", "xaxxab"));
        assert!(!m("*a*b", "xaxxa"));
    }
}
