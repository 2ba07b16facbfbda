//! Reading this crate's own source in tests (the layering and public API checks).
#![allow(unreachable_pub)]

/// `text` without its `#[cfg(test)] mod tests { ... }` block (braces counted), its lines kept
/// as empty lines so that line numbers after it still match the file.
pub fn without_unit_tests(text: &str) -> String {
    let Some(start) = text.find("#[cfg(test)]\nmod tests") else {
        return text.to_owned();
    };
    let mut depth = 0usize;
    let mut end = text.len();
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    end = start + i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    // The block's lines stay as empty lines, so line numbers after it still match the file.
    let blank = "\n".repeat(text[start..end].matches('\n').count());
    format!("{}{blank}{}", &text[..start], &text[end..])
}
