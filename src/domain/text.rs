//! Text matching that ignores case and diacritics, for auto-tag keywords, contact search and
//! tag suggestions: "stížnost" matches "STIZNOST", "Nováková" matches "novakova".

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Lower-cases `s` and removes diacritics (canonical decomposition, combining marks dropped;
/// a few letters that do not decompose are mapped by hand).
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            'ł' | 'Ł' => out.push('l'),
            'đ' | 'Đ' => out.push('d'),
            'ø' | 'Ø' => out.push('o'),
            'ß' => out.push_str("ss"),
            'æ' | 'Æ' => out.push_str("ae"),
            'œ' | 'Œ' => out.push_str("oe"),
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The folded words of `s`: runs of letters and digits, everything else separates.
pub fn words(s: &str) -> Vec<String> {
    fold(s)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether the word sequence `phrase` occurs in `text` as whole words.
pub fn contains_words(text: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && text.windows(phrase.len()).any(|w| w == phrase)
}

/// The digits of `s`, for matching fragments of phone numbers whatever their formatting.
pub fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_czech_diacritics() {
        assert_eq!(fold("STÍŽNOST"), "stiznost");
        assert_eq!(fold("stížnost"), fold("STIZNOST"));
        assert_eq!(fold("Nováková Łódź"), "novakova lodz");
        assert_eq!(fold("Straße"), "strasse");
    }

    #[test]
    fn matches_whole_words_only() {
        let text = words("Dobrý den, mám STÍŽNOST na fakturu!");
        assert!(contains_words(&text, &words("stiznost")));
        assert!(contains_words(&text, &words("na fakturu")));
        assert!(!contains_words(&text, &words("faktur")));
        assert!(!contains_words(&text, &words("")));
        assert_eq!(digits("+420 777-12 34"), "4207771234");
    }
}
