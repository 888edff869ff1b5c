"""rollwise.examples"""
