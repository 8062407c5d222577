"""The OurVidz generation backend core library."""
