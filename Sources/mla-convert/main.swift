print("mla-convert")
