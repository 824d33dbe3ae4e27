//! A generated parallel corpus for translation: the numbers 0 … 9999 written out in English and in German or
//! French, one pair per line, `source = target`:
//!
//! ```text
//! three hundred forty-five = dreihundertfünfundvierzig
//! seventy-one = soixante et onze
//! ```
//!
//! The spelling rules: English as in American usage without "and" ("two thousand three hundred forty-five");
//! German as one word with "ein" before "hundert" / "tausend" and "und" before the tens ("einhunderteins",
//! "zweitausenddreihundertfünfundvierzig"); French in the traditional (pre-1990) spelling, hyphens below a
//! hundred only, "et" in 21 … 71, "quatre-vingts" and "cents" plural only at the end, "mille" invariable
//! ("deux cent un", "quatre-vingt-onze", "deux mille trois cents").
//!
//! It is a text corpus (`text:numbers-en-de`, `text:numbers-en-fr`) with a fixed split **by number**: each
//! number goes to the test, validation or training split by a hash of its digits (≈ 10 %, 10 %, 80 %), so the
//! test numbers were never seen — a test of composing the rules, not of recall. Within a split the lines are
//! shuffled with a fixed seed; the corpus is laid out train | validation | test.
//!
//! No real bilingual resource fits here: the data folder has none, and nothing is downloaded. This corpus is
//! small (≈ 0.5 MB), exact and has one right answer per source, so exact match is meaningful next to BLEU.

use super::text::TextCorpus;
use super::Split;
use crate::rng::Rng;
use crate::{Error, Result};

/// The names of the generated corpora (`text:<name>`).
pub const CORPORA: &[&str] = &["numbers-en-de", "numbers-en-fr"];
/// Between a source and its target on a line.
pub const SEPARATOR: &str = " = ";
/// The largest number in the corpora.
pub const MAX: u32 = 9999;

const EN_UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const EN_TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// `n` (0 … 9999) in English words.
pub fn english(n: u32) -> String {
    fn below_100(n: u32) -> String {
        match n {
            0..=19 => EN_UNITS[n as usize].to_string(),
            _ if n.is_multiple_of(10) => EN_TENS[(n / 10) as usize].to_string(),
            _ => format!(
                "{}-{}",
                EN_TENS[(n / 10) as usize],
                EN_UNITS[(n % 10) as usize]
            ),
        }
    }
    let (th, h, r) = (n / 1000, n / 100 % 10, n % 100);
    let mut parts = Vec::new();
    if th > 0 {
        parts.push(format!("{} thousand", EN_UNITS[th as usize]));
    }
    if h > 0 {
        parts.push(format!("{} hundred", EN_UNITS[h as usize]));
    }
    if r > 0 || parts.is_empty() {
        parts.push(below_100(r));
    }
    parts.join(" ")
}

const DE_UNITS: [&str; 20] = [
    "null",
    "eins",
    "zwei",
    "drei",
    "vier",
    "fünf",
    "sechs",
    "sieben",
    "acht",
    "neun",
    "zehn",
    "elf",
    "zwölf",
    "dreizehn",
    "vierzehn",
    "fünfzehn",
    "sechzehn",
    "siebzehn",
    "achtzehn",
    "neunzehn",
];
const DE_TENS: [&str; 10] = [
    "", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig",
];

/// `n` (0 … 9999) in German, one word.
pub fn german(n: u32) -> String {
    // "ein" in compounds (einhundert, einundzwanzig), "eins" alone or at the end
    let unit = |u: u32| if u == 1 { "ein" } else { DE_UNITS[u as usize] };
    let below_100 = |n: u32| -> String {
        match n {
            0..=19 => DE_UNITS[n as usize].to_string(),
            _ if n.is_multiple_of(10) => DE_TENS[(n / 10) as usize].to_string(),
            _ => format!("{}und{}", unit(n % 10), DE_TENS[(n / 10) as usize]),
        }
    };
    let (th, h, r) = (n / 1000, n / 100 % 10, n % 100);
    let mut s = String::new();
    if th > 0 {
        s += &format!("{}tausend", unit(th));
    }
    if h > 0 {
        s += &format!("{}hundert", unit(h));
    }
    if r > 0 || s.is_empty() {
        s += &below_100(r);
    }
    s
}

const FR_UNITS: [&str; 20] = [
    "zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze",
    "douze", "treize", "quatorze", "quinze", "seize", "dix-sept", "dix-huit", "dix-neuf",
];
const FR_TENS: [&str; 7] = [
    "",
    "",
    "vingt",
    "trente",
    "quarante",
    "cinquante",
    "soixante",
];

/// `n` (0 … 9999) in French words (traditional spelling).
pub fn french(n: u32) -> String {
    fn below_100(n: u32) -> String {
        let (t, u) = (n / 10, n % 10);
        match n {
            0..=19 => FR_UNITS[n as usize].to_string(),
            20..=69 if u == 0 => FR_TENS[t as usize].to_string(),
            20..=69 if u == 1 => format!("{} et un", FR_TENS[t as usize]),
            20..=69 => format!("{}-{}", FR_TENS[t as usize], FR_UNITS[u as usize]),
            70 => "soixante-dix".into(),
            71 => "soixante et onze".into(),
            72..=79 => format!("soixante-{}", FR_UNITS[(n - 60) as usize]),
            80 => "quatre-vingts".into(),
            _ => format!("quatre-vingt-{}", FR_UNITS[(n - 80) as usize]),
        }
    }
    let (th, h, r) = (n / 1000, n / 100 % 10, n % 100);
    let mut parts = Vec::new();
    match th {
        0 => {}
        1 => parts.push("mille".to_string()),
        _ => parts.push(format!("{} mille", FR_UNITS[th as usize])),
    }
    match (h, r) {
        (0, _) => {}
        (1, _) => parts.push("cent".to_string()),
        (_, 0) => parts.push(format!("{} cents", FR_UNITS[h as usize])),
        _ => parts.push(format!("{} cent", FR_UNITS[h as usize])),
    }
    if r > 0 || parts.is_empty() {
        parts.push(below_100(r));
    }
    parts.join(" ")
}

/// The corpus of a run's data set name (`text:numbers-en-de` → `numbers-en-de`), `None` for other data.
pub fn corpus_of(data: &str) -> Option<&'static str> {
    let name = data.strip_prefix("text:")?;
    CORPORA.iter().copied().find(|c| *c == name)
}

/// The target language of corpus `name` (one of [`CORPORA`]) as a function of the number.
fn target_of(name: &str) -> Result<fn(u32) -> String> {
    match name {
        "numbers-en-de" => Ok(german),
        "numbers-en-fr" => Ok(french),
        other => Err(Error::unknown("parallel corpus", other, CORPORA)),
    }
}

/// The split number `n` belongs to: test for a hash ≡ 0 (mod 10), validation for ≡ 1, else train.
pub fn split_of(n: u32) -> Split {
    match crate::rng::fnv1a(n.to_string().as_bytes()) % 10 {
        0 => Split::Test,
        1 => Split::Validation,
        _ => Split::Train,
    }
}

/// The (source, target) pairs of corpus `name` in split `split`, in the corpus's (shuffled) order.
pub fn pairs(name: &str, split: Split) -> Result<Vec<(String, String)>> {
    let target = target_of(name)?;
    let mut numbers: Vec<u32> = (0..=MAX).filter(|&n| split_of(n) == split).collect();
    let salt = match split {
        Split::Train => 0,
        Split::Validation => 1,
        Split::Test => 2,
    };
    Rng::stream(0x0A7A_11E1, salt).shuffle(&mut numbers);
    Ok(numbers
        .into_iter()
        .map(|n| (english(n), target(n)))
        .collect())
}

/// The corpus `name` as text: the lines `source = target` of the train, validation and test splits, in that
/// order, with the split boundaries.
pub fn corpus(name: &str) -> Result<TextCorpus> {
    let mut bytes = Vec::new();
    let mut bounds = [0usize; 2];
    for (i, split) in [Split::Train, Split::Validation, Split::Test]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            bounds[i - 1] = bytes.len();
        }
        for (s, t) in pairs(name, split)? {
            bytes.extend_from_slice(format!("{s}{SEPARATOR}{t}\n").as_bytes());
        }
    }
    let mut c = TextCorpus::from_bytes(name, bytes);
    c.bounds = Some((bounds[0], bounds[1]));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spellings checked by hand against each language's rules, including every irregular case.
    #[test]
    fn numbers_are_spelled_by_the_rules() {
        for (n, en, de, fr) in [
            (0, "zero", "null", "zéro"),
            (1, "one", "eins", "un"),
            (16, "sixteen", "sechzehn", "seize"),
            (17, "seventeen", "siebzehn", "dix-sept"),
            (21, "twenty-one", "einundzwanzig", "vingt et un"),
            (30, "thirty", "dreißig", "trente"),
            (71, "seventy-one", "einundsiebzig", "soixante et onze"),
            (77, "seventy-seven", "siebenundsiebzig", "soixante-dix-sept"),
            (80, "eighty", "achtzig", "quatre-vingts"),
            (81, "eighty-one", "einundachtzig", "quatre-vingt-un"),
            (91, "ninety-one", "einundneunzig", "quatre-vingt-onze"),
            (100, "one hundred", "einhundert", "cent"),
            (101, "one hundred one", "einhunderteins", "cent un"),
            (200, "two hundred", "zweihundert", "deux cents"),
            (201, "two hundred one", "zweihunderteins", "deux cent un"),
            (
                280,
                "two hundred eighty",
                "zweihundertachtzig",
                "deux cent quatre-vingts",
            ),
            (1000, "one thousand", "eintausend", "mille"),
            (1001, "one thousand one", "eintausendeins", "mille un"),
            (
                2300,
                "two thousand three hundred",
                "zweitausenddreihundert",
                "deux mille trois cents",
            ),
            (
                2345,
                "two thousand three hundred forty-five",
                "zweitausenddreihundertfünfundvierzig",
                "deux mille trois cent quarante-cinq",
            ),
            (
                9999,
                "nine thousand nine hundred ninety-nine",
                "neuntausendneunhundertneunundneunzig",
                "neuf mille neuf cent quatre-vingt-dix-neuf",
            ),
        ] {
            assert_eq!(
                (english(n).as_str(), german(n).as_str(), french(n).as_str()),
                (en, de, fr),
                "{n}"
            );
        }
    }

    /// Every number is in exactly one split, the test and validation splits hold about 10 % each, the
    /// spellings are distinct per language (a source has one target), and the corpus text is laid out
    /// train | validation | test at its bounds.
    #[test]
    fn corpus_splits_by_number() -> Result<()> {
        let name = "numbers-en-fr";
        let sizes: Vec<usize> = [Split::Train, Split::Validation, Split::Test]
            .iter()
            .map(|&s| pairs(name, s).map(|p| p.len()))
            .collect::<Result<_>>()?;
        assert_eq!(sizes.iter().sum::<usize>(), MAX as usize + 1);
        assert!(
            sizes[1] > 800 && sizes[1] < 1200 && sizes[2] > 800 && sizes[2] < 1200,
            "{sizes:?}"
        );
        for f in [english, german, french] {
            let all: std::collections::BTreeSet<String> = (0..=MAX).map(f).collect();
            assert_eq!(all.len(), MAX as usize + 1);
        }
        let c = corpus(name)?;
        let test = String::from_utf8(c.split(Split::Test).to_vec())
            .map_err(|e| Error::invalid("test", e.to_string()))?;
        assert_eq!(test.lines().count(), sizes[2]);
        let train = String::from_utf8(c.split(Split::Train).to_vec())
            .map_err(|e| Error::invalid("test", e.to_string()))?;
        let train: std::collections::BTreeSet<&str> = train.lines().collect();
        assert_eq!(train.len(), sizes[0]);
        for line in test.lines() {
            assert!(!train.contains(line), "{line} in train and test");
            assert!(line.contains(SEPARATOR));
        }
        assert!(target_of("numbers-en-xx").is_err());
        Ok(())
    }
}
