//! Structured field values (RFC 8941), as far as session requests need them: a List whose
//! members are Strings, each possibly carrying Parameters (`wt-available-protocols`).
//!
//! The parser follows RFC 8941 §4.2 to the letter, parameters and inner lists included, so
//! that a comma or quote inside a parameter value cannot split or merge members.

/// Why a header value is not a valid List of Strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfvError {
    /// The value is not a syntactically valid RFC 8941 List.
    #[error("not a structured field list: {0}")]
    Syntax(&'static str),
    /// The List is valid but a member is not a String (a token, number or inner list).
    #[error("list member {0} is not a string")]
    NotAString(usize),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8, why: &'static str) -> Result<(), SfvError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(SfvError::Syntax(why))
        }
    }

    /// A bare item; `Some(string)` when it is a String, `None` for any other valid type.
    fn bare_item(&mut self) -> Result<Option<String>, SfvError> {
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| None),
            Some(b'*' | b'A'..=b'Z' | b'a'..=b'z') => {
                self.token();
                Ok(None)
            }
            Some(b':') => self.byte_sequence().map(|()| None),
            Some(b'?') => self.boolean().map(|()| None),
            _ => Err(SfvError::Syntax("expected an item")),
        }
    }

    fn string(&mut self) -> Result<String, SfvError> {
        self.expect(b'"', "expected '\"'")?;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(SfvError::Syntax("unterminated string"));
            };
            self.pos += 1;
            match c {
                b'\\' => match self.peek() {
                    Some(e @ (b'"' | b'\\')) => {
                        self.pos += 1;
                        out.push(char::from(e));
                    }
                    _ => return Err(SfvError::Syntax("invalid escape in string")),
                },
                b'"' => return Ok(out),
                0x20..=0x7e => out.push(char::from(c)),
                _ => return Err(SfvError::Syntax("invalid character in string")),
            }
        }
    }

    fn token(&mut self) {
        self.pos += 1;
        while let Some(c) = self.peek() {
            let tchar = c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c);
            if !tchar {
                break;
            }
            self.pos += 1;
        }
    }

    fn number(&mut self) -> Result<(), SfvError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let start = self.pos;
        let mut dot = None;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' => self.pos += 1,
                b'.' if dot.is_none() => {
                    dot = Some(self.pos);
                    self.pos += 1;
                }
                _ => break,
            }
        }
        let len = self.pos - start;
        match dot {
            None if (1..=15).contains(&len) => Ok(()),
            Some(d) if d > start && d - start <= 12 && (1..=3).contains(&(self.pos - d - 1)) => {
                Ok(())
            }
            _ => Err(SfvError::Syntax("invalid number")),
        }
    }

    fn byte_sequence(&mut self) -> Result<(), SfvError> {
        use base64::Engine as _;
        // RFC 8941 §4.2.7: padding may be missing and pad bits non-zero, but the content
        // must still decode.
        const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        self.pos += 1;
        let start = self.pos;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b':' => {
                    let content = &self.input[start..self.pos - 1];
                    return LENIENT
                        .decode(content)
                        .map(drop)
                        .map_err(|_| SfvError::Syntax("invalid base64 in byte sequence"));
                }
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {}
                _ => return Err(SfvError::Syntax("invalid byte sequence")),
            }
        }
        Err(SfvError::Syntax("unterminated byte sequence"))
    }

    fn boolean(&mut self) -> Result<(), SfvError> {
        self.pos += 1;
        match self.peek() {
            Some(b'0' | b'1') => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(SfvError::Syntax("invalid boolean")),
        }
    }

    fn key(&mut self) -> Result<(), SfvError> {
        match self.peek() {
            Some(b'*' | b'a'..=b'z') => self.pos += 1,
            _ => return Err(SfvError::Syntax("invalid parameter key")),
        }
        while let Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*') = self.peek() {
            self.pos += 1;
        }
        Ok(())
    }

    fn parameters(&mut self) -> Result<(), SfvError> {
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip_sp();
            self.key()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?;
            }
        }
        Ok(())
    }

    fn inner_list(&mut self) -> Result<(), SfvError> {
        self.expect(b'(', "expected '('")?;
        loop {
            self.skip_sp();
            if self.peek() == Some(b')') {
                self.pos += 1;
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            match self.peek() {
                Some(b' ' | b')') => {}
                _ => return Err(SfvError::Syntax("invalid inner list")),
            }
        }
    }
}

/// Parses an RFC 8941 List whose members must all be Strings (parameters are allowed and
/// ignored) and returns the strings in order. An empty value is an empty list.
pub fn parse_string_list(value: &str) -> Result<Vec<String>, SfvError> {
    let mut p = Parser {
        input: value.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    p.skip_sp();
    if p.peek().is_none() {
        return Ok(out);
    }
    let mut index = 0;
    let mut non_string = None;
    loop {
        if p.peek() == Some(b'(') {
            p.inner_list()?;
            non_string.get_or_insert(index);
        } else {
            match p.bare_item()? {
                Some(s) => out.push(s),
                None => {
                    non_string.get_or_insert(index);
                }
            }
            p.parameters()?;
        }
        index += 1;
        p.skip_ows();
        match p.peek() {
            None => break,
            Some(b',') => {
                p.pos += 1;
                p.skip_ows();
                if p.peek().is_none() {
                    return Err(SfvError::Syntax("trailing comma"));
                }
            }
            Some(_) => return Err(SfvError::Syntax("expected ','")),
        }
    }
    match non_string {
        Some(i) => Err(SfvError::NotAString(i)),
        None => Ok(out),
    }
}

/// Serializes `s` as an RFC 8941 String; `None` when it holds characters a String cannot.
pub fn serialize_string(s: &str) -> Option<String> {
    if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_strings_with_parameters() {
        assert_eq!(
            parse_string_list(r#""chat.v2", "chat.v1";q=1"#).unwrap(),
            ["chat.v2", "chat.v1"]
        );
        assert_eq!(parse_string_list("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_string_list(r#""a\"b""#).unwrap(), ["a\"b"]);
        // A comma or quote inside a parameter value does not split the member.
        assert_eq!(
            parse_string_list(r#""a";p="x, \"y\"", "b""#).unwrap(),
            ["a", "b"]
        );
    }

    #[test]
    fn invalid_lists_are_errors() {
        assert_eq!(parse_string_list("token"), Err(SfvError::NotAString(0)));
        assert_eq!(parse_string_list(r#""a", 1"#), Err(SfvError::NotAString(1)));
        assert!(matches!(
            parse_string_list(r#""open"#),
            Err(SfvError::Syntax(_))
        ));
        assert!(matches!(
            parse_string_list(r#""a","#),
            Err(SfvError::Syntax(_))
        ));
        assert!(matches!(
            parse_string_list(r#""a" "b""#),
            Err(SfvError::Syntax(_))
        ));
        // A parameter's byte sequence must decode (found by fuzzing against the sfv crate).
        assert!(matches!(
            parse_string_list(r#""a";b=:a:"#),
            Err(SfvError::Syntax(_))
        ));
        assert!(parse_string_list(r#""a";b=:bsG8=:"#).is_err());
        assert_eq!(parse_string_list(r#""a";b=:bsG8:"#).unwrap(), ["a"]);
        assert!(matches!(
            parse_string_list("\"é\""),
            Err(SfvError::Syntax(_))
        ));
    }

    #[test]
    fn strings_serialize_and_parse_back() {
        for s in ["chat.v1", "a\"b\\", ""] {
            let wire = serialize_string(s).unwrap();
            assert_eq!(parse_string_list(&wire).unwrap(), [s]);
        }
        assert_eq!(serialize_string("tab\there"), None);
    }
}
