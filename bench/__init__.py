"""The side-by-side benchmark: a bare aiohttp ceiling, igw's gateway and a FastAPI baseline."""
