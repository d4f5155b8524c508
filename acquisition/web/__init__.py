"""exsylab serve: the web page and JSON API of a station, and what they show of its runs."""
