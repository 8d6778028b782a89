import sys
from pathlib import Path


# The recipe tests share `recipe_helpers` (recipes are scripts loaded by path, not a package).
sys.path.insert(0, str(Path(__file__).parent))
