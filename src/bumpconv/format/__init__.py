"""Facts of the format, and nothing that does I/O: dtypes and their blocks, the layout profiles
(``schemas/*.profile.json``) and their packing rules, the header/footer codec, metadata, the model
spec, the stage table, the tokenizer arrays and the quantization policy. Every other package
derives from these; this one imports no other part of bumpconv."""
