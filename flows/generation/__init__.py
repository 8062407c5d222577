"""One flow run per generation job: validate -> enhance -> generate -> store -> callback."""
