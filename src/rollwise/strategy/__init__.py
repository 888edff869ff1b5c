"""rollwise.strategy"""
