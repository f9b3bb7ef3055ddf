"""The three stages of the pipeline: one public function each, plus its result type."""
