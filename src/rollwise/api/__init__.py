"""rollwise.api"""
