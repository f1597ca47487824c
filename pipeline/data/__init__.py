"""Images in: decoding, benchmark readers, the job's input listing and manifests, generated demo data."""
