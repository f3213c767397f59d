//! Message templates of script mode: `{{conn}}`, `{{n}}`, `{{last_seq}}`,
//! `{{now_ms}}`, `{{uuid}}` and `{{pad N}}` inside literal text
//! (docs/reference.md#script-mode).
//!
//! A template is compiled once, when the script loads (an unknown
//! placeholder is an error there, never at send time), and rendered into a
//! caller's reusable buffer: rendering itself allocates nothing once the
//! buffer has grown to the message size.

use std::fmt::Write as _;

/// What a placeholder stands for when a message is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vars {
    /// `{{conn}}`: the connection (slot) index.
    pub conn: u32,
    /// `{{n}}`: the message number on this connection, from 1.
    pub n: u64,
    /// `{{last_seq}}`: the last in-order sequence number seen (0 at first).
    pub last_seq: u64,
    /// `{{now_ms}}`: Unix time in milliseconds.
    pub now_ms: u64,
    /// `{{uuid}}`: 128 random bits, written as a version-4 UUID.
    pub uuid: u128,
}

/// The placeholders, for error messages.
pub const PLACEHOLDERS: &str = "{{conn}}, {{n}}, {{last_seq}}, {{now_ms}}, {{uuid}}, {{pad N}}";

/// The longest `{{pad N}}`.
pub const MAX_PAD: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Conn,
    N,
    LastSeq,
    NowMs,
    Uuid,
    Pad(usize),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

/// A template that does not compile: what is wrong, and the byte offset in
/// the template where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Byte offset of the bad placeholder in the template text.
    pub offset: usize,
    /// What is wrong, with the valid placeholders.
    pub message: String,
}

impl Template {
    /// Compiles `source`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            text.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError {
                    offset: offset + open,
                    message: format!(
                        "`{{{{` without a closing `}}}}`: valid placeholders are {PLACEHOLDERS}"
                    ),
                });
            };
            let name = after[..close].trim();
            let part = match name {
                "conn" => Part::Conn,
                "n" => Part::N,
                "last_seq" => Part::LastSeq,
                "now_ms" => Part::NowMs,
                "uuid" => Part::Uuid,
                other => match other.strip_prefix("pad") {
                    Some(count) if count.starts_with(char::is_whitespace) => {
                        match count.trim().parse::<usize>() {
                            Ok(n) if n <= MAX_PAD => Part::Pad(n),
                            _ => {
                                return Err(TemplateError {
                                    offset: offset + open,
                                    message: format!(
                                        "`{{{{{other}}}}}`: N in {{{{pad N}}}} must be a whole number from 0 to {MAX_PAD}"
                                    ),
                                })
                            }
                        }
                    }
                    _ => {
                        return Err(TemplateError {
                            offset: offset + open,
                            message: format!(
                                "unknown placeholder `{{{{{other}}}}}`: valid placeholders are {PLACEHOLDERS}"
                            ),
                        })
                    }
                },
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            parts,
            source: source.to_string(),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template uses `{{last_seq}}`.
    pub fn uses_last_seq(&self) -> bool {
        self.parts.contains(&Part::LastSeq)
    }

    /// Whether the template uses `{{uuid}}` (callers draw one only then).
    pub fn uses_uuid(&self) -> bool {
        self.parts.contains(&Part::Uuid)
    }

    /// Whether the template uses `{{now_ms}}`.
    pub fn uses_now(&self) -> bool {
        self.parts.contains(&Part::NowMs)
    }

    /// Renders into `out` (cleared first). No allocation once `out` has the
    /// capacity of the rendered message.
    pub fn render_into(&self, vars: &Vars, out: &mut String) {
        out.clear();
        for part in &self.parts {
            // Writing integers into a String cannot fail.
            let _ = match part {
                Part::Text(t) => {
                    out.push_str(t);
                    Ok(())
                }
                Part::Conn => write!(out, "{}", vars.conn),
                Part::N => write!(out, "{}", vars.n),
                Part::LastSeq => write!(out, "{}", vars.last_seq),
                Part::NowMs => write!(out, "{}", vars.now_ms),
                Part::Uuid => write_uuid(vars.uuid, out),
                Part::Pad(n) => {
                    out.extend(std::iter::repeat_n('x', *n));
                    Ok(())
                }
            };
        }
    }

    /// Renders into a new string of exactly the message's length (one
    /// allocation), using `scratch` as the reusable work buffer.
    pub fn render(&self, vars: &Vars, scratch: &mut String) -> String {
        self.render_into(vars, scratch);
        scratch.as_str().to_owned()
    }
}

/// Writes 128 random bits as a version-4, variant-1 UUID.
fn write_uuid(bits: u128, out: &mut String) -> std::fmt::Result {
    let b = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    write!(
        out,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (b >> 96) as u32,
        (b >> 80) as u16,
        (b >> 64) as u16,
        (b >> 48) as u16,
        (b & 0xffff_ffff_ffff) as u64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            conn: 7,
            n: 42,
            last_seq: 1001,
            now_ms: 1_700_000_000_123,
            uuid: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        }
    }

    fn render(t: &str) -> String {
        let mut out = String::new();
        Template::parse(t).unwrap().render_into(&vars(), &mut out);
        out
    }

    #[test]
    fn every_placeholder_renders() {
        assert_eq!(
            render(r#"42["chat",{"id":"{{conn}}-{{n}}","from":{{last_seq}},"t":{{now_ms}}}]"#),
            r#"42["chat",{"id":"7-42","from":1001,"t":1700000000123}]"#
        );
        assert_eq!(render("{{pad 5}}|{{ pad 0 }}|"), "xxxxx||");
        assert_eq!(render("{{uuid}}"), "01234567-89ab-4def-8123-456789abcdef");
        assert_eq!(render("no placeholders"), "no placeholders");
        assert_eq!(render(""), "");
        assert_eq!(render("{ {single} }"), "{ {single} }");
    }

    #[test]
    fn bad_placeholders_name_the_valid_ones_and_where() {
        let err = Template::parse(r#"{"id":"{{conn}}-{{count}}"}"#).unwrap_err();
        assert_eq!(err.offset, 16);
        assert!(
            err.message.contains("unknown placeholder `{{count}}`"),
            "{}",
            err.message
        );
        assert!(err.message.contains(PLACEHOLDERS), "{}", err.message);
        let err = Template::parse("abc {{n").unwrap_err();
        assert_eq!(err.offset, 4);
        assert!(err.message.contains("without a closing"), "{}", err.message);
        let err = Template::parse("{{pad x}}").unwrap_err();
        assert!(err.message.contains("whole number"), "{}", err.message);
        let err = Template::parse("{{padding}}").unwrap_err();
        assert!(
            err.message.contains("unknown placeholder"),
            "{}",
            err.message
        );
        assert!(Template::parse(&format!("{{{{pad {}}}}}", MAX_PAD + 1)).is_err());
    }

    #[test]
    fn uses_reports_placeholders() {
        let t = Template::parse("{{last_seq}}").unwrap();
        assert!(t.uses_last_seq() && !t.uses_uuid() && !t.uses_now());
        let t = Template::parse("{{uuid}} {{now_ms}}").unwrap();
        assert!(!t.uses_last_seq() && t.uses_uuid() && t.uses_now());
    }

    #[test]
    fn rendering_reuses_the_buffer() {
        let t = Template::parse(r#"{"id":"{{conn}}-{{n}}","body":"{{pad 64}}"}"#).unwrap();
        let mut buf = String::new();
        t.render_into(&vars(), &mut buf);
        let cap = buf.capacity();
        let ptr = buf.as_ptr();
        for n in 0..1000 {
            t.render_into(&Vars { n, ..vars() }, &mut buf);
        }
        assert_eq!((buf.capacity(), buf.as_ptr()), (cap, ptr));
        let owned = t.render(&vars(), &mut buf);
        assert_eq!(owned.len(), owned.capacity());
    }
}
