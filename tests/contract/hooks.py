"""schemathesis hooks for peregrine's OpenAPI document: strategies for its custom string
formats, which schemathesis cannot derive from the schema."""

import schemathesis
from hypothesis import strategies as st

# Tags that the `language-tags` crate accepts (well-formed and in the IANA subtag registry):
# a language alone, with a script, a region, a variant or a private-use part.
LANGUAGE_TAGS = [
    "en", "de", "fr", "ja", "pt", "zh", "ast", "en-US", "en-GB", "pt-BR", "es-419", "de-CH",
    "sr-Latn", "zh-Hant-TW", "zh-Hans-CN", "de-CH-1996", "sl-rozaj", "en-US-x-twain",
]

# A `language-tag` string is a registered BCP 47 tag, in any letter case, since the server
# stores it in its canonical case.
schemathesis.openapi.format(
    "language-tag",
    st.tuples(st.sampled_from(LANGUAGE_TAGS), st.sampled_from([str, str.upper, str.lower])).map(
        lambda pair: pair[1](pair[0])
    ),
)
