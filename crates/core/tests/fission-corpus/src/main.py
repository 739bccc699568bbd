def main():
    return "built from source\n"
